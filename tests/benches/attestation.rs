//! TPM attestation cost on swtpm: enrollment (the agent opening its TPM — EK and a new AK —
//! then the coordinator's checks, a credential made in software and activated by the TPM, and
//! the first quote verified and judged) and each later quote round (quote with PCR reads on
//! the agent, verification and reference check on the coordinator). The agent's and the
//! coordinator's real code, in one process: the QUIC hop between them (~0.1 ms on loopback,
//! see the link benchmark) is left out.
//!
//! `cargo bench -p fogshell-e2e --bench attestation` (FOGSHELL_BENCH_TRIALS, default 20
//! enrollments, each followed by 10 quotes). Needs Debian's swtpm and swtpm-tools.

use std::time::Instant;

use fogshell_agent::tpm::Tpm;
use fogshell_coordinator::attestation::{AttestationConfig, credential, tpm as verify};
use fogshell_e2e::bench::report;
use fogshell_e2e::swtpm::{Swtpm, TpmManufacturer};
use fogshell_shared::NodeId;
use fogshell_shared::wire::attest::PcrSet;

const QUOTES_PER_NODE: usize = 10;

fn main() {
    let trials: usize = std::env::var("FOGSHELL_BENCH_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(20);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let maker = TpmManufacturer::new();
    let pcrs = PcrSet::new(0..8).unwrap();
    let mut enrollments = Vec::new();
    let mut quotes = Vec::new();
    let node = NodeId::new("bench-node").unwrap();
    for trial in 0..trials {
        // A new TPM each time, manufactured outside the measurement.
        let swtpm = Swtpm::start(&maker);
        let agent_dir = tempfile::tempdir().unwrap();
        let coordinator_dir = tempfile::tempdir().unwrap();
        let attestor = AttestationConfig {
            manufacturer_cas: vec![maker.ca_bundle()],
            pcrs,
            ..AttestationConfig::default()
        }
        .attestor(coordinator_dir.path())
        .unwrap();
        runtime.block_on(async {
            let started = Instant::now();
            let tpm = Tpm::open(&swtpm.tcti(), agent_dir.path()).unwrap();
            let now = time::OffsetDateTime::now_utc();
            let (keys, fresh) = attestor.check_identity(&node, tpm.identity(), now).unwrap();
            assert!(fresh);
            let secret = [trial as u8; 32];
            let challenge = credential::make_credential(&keys.ek, &keys.ak.name, &secret).unwrap();
            assert_eq!(tpm.activate(challenge).await.unwrap(), secret);
            let nonce = vec![1; 32];
            let evidence = tpm.quote(nonce.clone(), pcrs).await.unwrap();
            let values = verify::verify_quote(&keys.ak, &evidence, &nonce, pcrs).unwrap();
            let stamp = fogshell_shared::Timestamp::from_unix_millis(0).unwrap();
            attestor.enroll(&node, &keys, &values, stamp).unwrap();
            attestor.judge(&node, &Default::default(), &values).unwrap();
            enrollments.push(started.elapsed());

            for round in 0..QUOTES_PER_NODE {
                let started = Instant::now();
                let nonce = vec![round as u8; 32];
                let evidence = tpm.quote(nonce.clone(), pcrs).await.unwrap();
                let values = verify::verify_quote(&keys.ak, &evidence, &nonce, pcrs).unwrap();
                attestor.judge(&node, &Default::default(), &values).unwrap();
                quotes.push(started.elapsed());
            }
        });
    }
    println!("swtpm {trials} TPMs, PCRs {pcrs}");
    report("enrollment (EK + AK + activation + 1st quote)", enrollments);
    report("quote round (quote + verify + reference)", quotes);
}
