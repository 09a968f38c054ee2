//! TPM attestation with real software TPMs (swtpm, each manufactured per test with an EK
//! certificate from a test manufacturer CA): first the verifier against the agent's TPM code
//! directly — credential activation, quotes, replays, foreign keys and unknown CAs — then
//! the whole stack: an honest node becomes `attested`, takes `attested`-only sessions, loses
//! the tier when a PCR changes (its session ends with a status frame saying why), and an
//! operator's new reference restores it.

use std::time::Duration;

use fogshell_agent::tpm::Tpm;
use fogshell_coordinator::attestation::{AttestationConfig, credential, tpm as verify};
use fogshell_e2e::api::Api;
use fogshell_e2e::stack::{NodeSpec, Stack};
use fogshell_e2e::swtpm::{Swtpm, TpmManufacturer};
use fogshell_e2e::ws::Viewer;
use fogshell_shared::wire::attest::PcrSet;

const WAIT: Duration = Duration::from_secs(20);

fn pcrs() -> PcrSet {
    PcrSet::new([0, 7, 16]).unwrap()
}

/// The agent's TPM code on `swtpm`, with its state in `dir`.
fn open(swtpm: &Swtpm, dir: &tempfile::TempDir) -> Tpm {
    Tpm::open(&swtpm.tcti(), dir.path()).expect("opening the swtpm")
}

fn node(name: &str) -> fogshell_shared::NodeId {
    fogshell_shared::NodeId::new(name).unwrap()
}

#[tokio::test]
async fn credential_activation_binds_only_the_ak_of_the_same_tpm() {
    let maker = TpmManufacturer::new();
    let (tpm_a, tpm_b) = (Swtpm::start(&maker), Swtpm::start(&maker));
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(&tpm_a, &dir_a);
    let b = open(&tpm_b, &dir_b);
    let coordinator_dir = tempfile::tempdir().unwrap();
    let attestor = AttestationConfig {
        manufacturer_cas: vec![maker.ca_bundle()],
        ..AttestationConfig::default()
    }
    .attestor(coordinator_dir.path())
    .unwrap();

    let now = time::OffsetDateTime::now_utc();
    let (keys, needs_enrollment) = attestor
        .check_identity(&node("fog-a"), a.identity(), now)
        .expect("an honest TPM's identity checks out");
    assert!(needs_enrollment);
    let secret = [0x5a; 32];
    let challenge = credential::make_credential(&keys.ek, &keys.ak.name, &secret).unwrap();
    assert_eq!(a.activate(challenge).await.unwrap(), secret);

    // A rogue agent presenting A's EK with B's AK: the credential is made for B's AK name
    // and A's EK, and A's TPM, which does not hold that AK, cannot unwrap it.
    let ak_b = verify::attestation_key(&b.identity().ak_public).unwrap();
    let challenge = credential::make_credential(&keys.ek, &ak_b.name, &secret).unwrap();
    let refused = a.activate(challenge.clone()).await;
    assert!(refused.is_err(), "A unwrapped a credential for B's AK");
    // …and B's TPM, which holds that AK but not A's EK, cannot either.
    assert!(b.activate(challenge).await.is_err());

    // The AK persists: reopening the TPM from the same state gives the same AK.
    drop(a);
    let again = open(&tpm_a, &dir_a);
    assert_eq!(
        verify::attestation_key(&again.identity().ak_public)
            .unwrap()
            .name,
        keys.ak.name
    );
}

#[tokio::test]
async fn quotes_verify_and_replays_tampering_and_other_tpms_do_not() {
    let maker = TpmManufacturer::new();
    let (tpm_a, tpm_b) = (Swtpm::start(&maker), Swtpm::start(&maker));
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(&tpm_a, &dir_a);
    let b = open(&tpm_b, &dir_b);
    let ak = verify::attestation_key(&a.identity().ak_public).unwrap();

    let nonce = vec![7u8; 32];
    let quote = a.quote(nonce.clone(), pcrs()).await.unwrap();
    let values = verify::verify_quote(&ak, &quote, &nonce, pcrs()).expect("an honest quote");
    assert_eq!(values.len(), 3);

    // Replayed: a quote for an older nonce.
    let error = verify::verify_quote(&ak, &quote, &[8u8; 32], pcrs()).unwrap_err();
    assert!(error.0.contains("nonce"), "{error}");
    // Lying about a value: the quoted digest does not match.
    let mut lying = quote.clone();
    lying.pcr_values[1].digest = [0xee; 32];
    let error = verify::verify_quote(&ak, &lying, &nonce, pcrs()).unwrap_err();
    assert!(error.0.contains("digest"), "{error}");
    // A quote over fewer PCRs than asked.
    let partial = a
        .quote(nonce.clone(), PcrSet::new([0]).unwrap())
        .await
        .unwrap();
    assert!(verify::verify_quote(&ak, &partial, &nonce, pcrs()).is_err());
    // One changed bit in what the TPM signed.
    let mut altered = quote.clone();
    let last = altered.attest.len() - 1;
    altered.attest[last] ^= 1;
    let error = verify::verify_quote(&ak, &altered, &nonce, pcrs()).unwrap_err();
    assert!(error.0.contains("signature"), "{error}");
    // Another TPM's quote, checked against A's pinned AK.
    let foreign = b.quote(nonce.clone(), pcrs()).await.unwrap();
    let error = verify::verify_quote(&ak, &foreign, &nonce, pcrs()).unwrap_err();
    assert!(error.0.contains("signature"), "{error}");

    // An extended PCR shows in the next quote's values.
    tpm_a.extend_pcr(16);
    let later = a.quote(nonce.clone(), pcrs()).await.unwrap();
    let changed = verify::verify_quote(&ak, &later, &nonce, pcrs()).unwrap();
    assert_ne!(changed[2].digest, values[2].digest);
    assert_eq!(changed[..2], values[..2]);
}

#[tokio::test]
async fn ek_certificates_of_unknown_manufacturers_and_missing_ones_are_refused() {
    let (trusted, unknown) = (TpmManufacturer::new(), TpmManufacturer::new());
    let genuine = Swtpm::start(&trusted);
    let foreign = Swtpm::start(&unknown);
    let bare = Swtpm::start_with(&trusted, false);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let coordinator_dir = tempfile::tempdir().unwrap();
    let attestor = AttestationConfig {
        manufacturer_cas: vec![trusted.ca_bundle()],
        ..AttestationConfig::default()
    }
    .attestor(coordinator_dir.path())
    .unwrap();
    let now = time::OffsetDateTime::now_utc();

    let ok = open(&genuine, &dirs[0]);
    attestor
        .check_identity(&node("fog-a"), ok.identity(), now)
        .expect("the trusted manufacturer's TPM");
    let refused = attestor
        .check_identity(&node("fog-b"), open(&foreign, &dirs[1]).identity(), now)
        .unwrap_err();
    assert_eq!(refused.rule_id, "attestation.ek_certificate", "{refused:?}");
    let bare = open(&bare, &dirs[2]);
    assert!(bare.identity().ek_certificate.is_none());
    let refused = attestor
        .check_identity(&node("fog-c"), bare.identity(), now)
        .unwrap_err();
    assert_eq!(refused.rule_id, "attestation.no_ek_certificate");
    // A genuine certificate for another TPM's EK.
    let mut swapped = bare.identity().clone();
    swapped.ek_certificate = ok.identity().ek_certificate.clone();
    let refused = attestor
        .check_identity(&node("fog-c"), &swapped, now)
        .unwrap_err();
    assert!(refused.reason.contains("another key"), "{refused:?}");
}

/// The profiles of the stack tests: `secure` runs only on attested nodes.
fn profiles_file(stack_dir: &std::path::Path) -> String {
    let path = stack_dir.join("profiles.toml");
    std::fs::write(
        &path,
        "[secure]\ncpu_millis = 1000\nmemory_bytes = 536870912\npids = 256\nmin_trust_tier = \"attested\"\n",
    )
    .unwrap();
    path.display().to_string()
}

fn events_of(body: &serde_json::Value, event_type: &str) -> Vec<serde_json::Value> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == event_type)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attested_node_keeps_its_tier_only_while_its_pcrs_match() {
    let maker = TpmManufacturer::new();
    let swtpm = Swtpm::start(&maker);
    let scratch = tempfile::tempdir().unwrap();
    let profiles = profiles_file(scratch.path());
    let bundle = maker.ca_bundle();
    let mut stack = Stack::coordinator_only(&[
        "--tpm-ca",
        bundle.to_str().unwrap(),
        "--attestation-interval",
        "1s",
        "--attestation-pcrs",
        "0-7,16",
        "--profiles",
        &profiles,
    ]);
    stack.add(&NodeSpec {
        tpm: Some(swtpm.tcti()),
        ..NodeSpec::new("fog-a")
    });
    stack.add(&NodeSpec::new("fog-b"));
    stack.wait_for_node_field("fog-a", "trust_tier", "attested", WAIT);

    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");
    let created = api.create_session_with(&alice, "secure", 3600).await;
    assert_eq!(created.status, 201, "{}\n{}", created.body, stack.logs());
    assert_eq!(created.body["placement"]["node_id"], "fog-a");
    assert_eq!(created.body["placement"]["trust_tier"], "attested");
    let id = created.body["session_id"].as_str().unwrap().to_owned();
    let mut viewer = Viewer::attach(&created.body["attach"]).await;
    viewer.type_bytes(b"echo \"at\"\"tested\"\n").await;
    viewer.expect_output("attested", WAIT).await;
    // A session that does not demand attested keeps running through the loss.
    let relaxed = api.create_session(&alice, 3600).await;
    assert_eq!(relaxed.status, 201);
    let relaxed_id = relaxed.body["session_id"].as_str().unwrap().to_owned();

    // Something on the node's boot chain changes: the next quote no longer matches.
    swtpm.extend_pcr(16);
    stack.wait_for_node_field("fog-a", "trust_tier", "unattested", Duration::from_secs(5));
    let failed = viewer.expect_status("failed", WAIT).await;
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("no longer attested") && reason.contains("PCR 16"),
        "{failed}"
    );
    api.wait_for_status(&alice, &id, "terminated", WAIT).await;
    assert_eq!(api.session_status(&alice, &relaxed_id).await, "running");
    let refused = api.create_session_with(&alice, "secure", 3600).await;
    assert_eq!(refused.status, 503, "{}", refused.body);

    let auditor = stack.issuer.token("admin", "ops");
    let events = api
        .get(&auditor, "/v1/events?limit=1000", "/v1/events")
        .await;
    let attested = events_of(&events.body, "node.attested");
    assert_eq!(attested.len(), 1, "{attested:?}\n{}", stack.logs());
    assert_eq!(attested[0]["details"]["enrolled"], true);
    let failures = events_of(&events.body, "node.attestation_failed");
    assert_eq!(
        failures.len(),
        1,
        "recorded once, not every interval: {failures:?}"
    );
    assert!(
        events_of(&events.body, "policy.denied")
            .iter()
            .any(|e| e["details"]["rule_id"] == "attestation.pcr_mismatch"),
        "{}",
        events.body
    );
    let terminated = events_of(&events.body, "session.terminated");
    assert!(
        terminated
            .iter()
            .any(|e| e["details"]["session_id"] == id.as_str()
                && e["details"]["cause"] == "trust_lost"),
        "{terminated:?}"
    );

    // The operator accepts the new boot chain: the node's current values become its reference.
    let recorded = std::process::Command::new(fogshell_e2e::binary("fogshell-coordinator"))
        .args(["attestation", "reference", "--node", "fog-a", "--data-dir"])
        .arg(stack.data_dir())
        .output()
        .unwrap();
    assert!(recorded.status.success(), "{recorded:?}");
    stack.wait_for_node_field("fog-a", "trust_tier", "attested", Duration::from_secs(5));

    // A restarted agent keeps its AK: attested again on its new connection, without
    // enrolling anew.
    stack.restart_node("fog-a");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let events = api
            .get(
                &auditor,
                "/v1/events?event_type=node.attested",
                "/v1/events",
            )
            .await;
        let attested = events_of(&events.body, "node.attested");
        let enrolled: Vec<_> = attested.iter().map(|e| &e["details"]["enrolled"]).collect();
        assert_eq!(enrolled[0], true, "{attested:?}");
        assert!(enrolled[1..].iter().all(|e| **e == false), "{attested:?}");
        if attested.len() == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not attested after the restart: {attested:?}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.verify_audit();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unvouched_replaced_and_absent_tpms_leave_a_node_unattested() {
    let (trusted, unknown) = (TpmManufacturer::new(), TpmManufacturer::new());
    let genuine = Swtpm::start(&trusted);
    let replacement = Swtpm::start(&trusted);
    let foreign = Swtpm::start(&unknown);
    let bundle = trusted.ca_bundle();
    let mut stack = Stack::coordinator_only(&[
        "--tpm-ca",
        bundle.to_str().unwrap(),
        "--attestation-interval",
        "1s",
    ]);
    stack.add(&NodeSpec {
        tpm: Some(genuine.tcti()),
        ..NodeSpec::new("fog-a")
    });
    stack.add(&NodeSpec {
        tpm: Some(foreign.tcti()),
        ..NodeSpec::new("fog-b")
    });
    // Claims attested in its configuration, but has no TPM to prove it.
    stack.add(&NodeSpec {
        tier: "attested",
        ..NodeSpec::new("fog-c")
    });
    stack.wait_for_node_field("fog-a", "trust_tier", "attested", WAIT);

    // fog-a's agent comes back on another (genuine) TPM: not the one it enrolled with.
    let config = stack.node_dir("fog-a").join("agent.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace(&genuine.tcti(), &replacement.tcti())).unwrap();
    std::fs::remove_dir_all(stack.node_dir("fog-a").join("tpm")).unwrap();
    stack.restart_node("fog-a");

    let api = Api::new(&stack.api).await;
    let auditor = stack.issuer.token("admin", "ops");
    let deadline = tokio::time::Instant::now() + WAIT;
    let wanted = [
        ("fog-a", "attestation.ek_changed"),
        ("fog-b", "attestation.ek_certificate"),
        ("fog-c", "attestation.no_evidence"),
    ];
    loop {
        let events = api
            .get(
                &auditor,
                "/v1/events?event_type=policy.denied&limit=1000",
                "/v1/events",
            )
            .await;
        let denied = events_of(&events.body, "policy.denied");
        let missing: Vec<_> = wanted
            .iter()
            .filter(|(node, rule)| {
                !denied
                    .iter()
                    .any(|e| e["details"]["subject"] == *node && e["details"]["rule_id"] == *rule)
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refusal {missing:?} in {denied:?}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in ["fog-a", "fog-b", "fog-c"] {
        stack.wait_for_node_field(node, "trust_tier", "unattested", WAIT);
    }
}
