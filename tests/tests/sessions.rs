//! The session path end to end, with the real binaries, a real container and an OIDC issuer
//! on loopback: create → attach → type → resize → exit code → delete; several viewers;
//! malformed frames; the audit chain. Every API answer is checked against the OpenAPI
//! document the coordinator serves.

use std::time::Duration;

use fogshell_e2e::api::Api;
use fogshell_e2e::stack::{NodeSpec, Stack, default_image};
use fogshell_e2e::ws::{NORMAL_CLOSE, Viewer};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

async fn attach(created: &Value) -> Viewer {
    Viewer::attach(&created["attach"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_runs_from_create_to_delete() {
    let stack = Stack::start();
    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");

    let created = api.create_session(&alice, 600).await;
    assert_eq!(created.status, 201, "{}\n{}", created.body, stack.logs());
    let body = created.body;
    let id = body["session_id"].as_str().unwrap().to_owned();
    assert_eq!(body["placement"]["node_id"], "fog-a");
    assert!(
        body["attach"]["ws_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v1/sessions/{id}/pty"))
    );

    let mut viewer = attach(&body).await;
    let status = viewer.expect_frame("status", WAIT).await;
    assert_eq!(status["state"], "running");
    viewer.type_bytes(b"echo \"mar\"\"ker\"\n").await;
    viewer.expect_output("marker", WAIT).await;

    // A resize reaches the shell's terminal.
    viewer.resize(101, 33).await;
    viewer.type_bytes(b"stty size\n").await;
    viewer.expect_output("33 101", WAIT).await;

    // A second viewer sees the same terminal (with what scrolled by before it came).
    let mut second = attach(&body).await;
    second.expect_output("marker", WAIT).await;
    second.type_bytes(b"echo \"sec\"\"ond\"\n").await;
    viewer.expect_output("second", WAIT).await;

    let path = format!("/v1/sessions/{id}");
    let got = api.get(&alice, &path, "/v1/sessions/{id}").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["status"], "running");
    assert_eq!(got.body["image_ref"], default_image());
    assert!(
        got.header("x-ratelimit-limit").is_some() && got.header("x-ratelimit-remaining").is_some()
    );

    // The shell's exit status reaches every viewer, then a normal close.
    viewer.type_bytes(b"exit 7\n").await;
    let exit = viewer.expect_frame("exit", WAIT).await;
    assert_eq!(exit["code"], 7);
    assert_eq!(viewer.expect_close(WAIT).await, NORMAL_CLOSE);
    assert_eq!(second.expect_frame("exit", WAIT).await["code"], 7);

    api.wait_for_status(&alice, &id, "terminated", WAIT).await;
    let deleted = api
        .call("DELETE", &path, "/v1/sessions/{id}", Some(&alice), None)
        .await;
    assert_eq!(
        (deleted.status, deleted.body.clone()),
        (200, json!({"terminated": true}))
    );

    let listed = api.get(&alice, "/v1/sessions", "/v1/sessions").await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);

    // A session that is deleted while it runs ends on its node too.
    let created = api.create_session(&alice, 600).await.body;
    let mut viewer = attach(&created).await;
    viewer.expect_frame("status", WAIT).await;
    let path = format!("/v1/sessions/{}", created["session_id"].as_str().unwrap());
    let deleted = api
        .call("DELETE", &path, "/v1/sessions/{id}", Some(&alice), None)
        .await;
    assert_eq!(deleted.status, 200);
    viewer.expect_close(WAIT).await;
    // The node removes both: the deleted one at once, the exited one a moment after its
    // viewers saw the exit.
    let sessions_dir = stack.agent_dir().join("sessions");
    let mut left = usize::MAX;
    for _ in 0..200 {
        left = std::fs::read_dir(&sessions_dir).unwrap().count();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "sessions left on the node\n{}", stack.logs());

    // The audit chain verifies and holds the minimum set.
    stack.verify_audit();
    let events = api
        .get(&alice, "/v1/events?limit=1000", "/v1/events")
        .await
        .body;
    let types: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    for wanted in [
        "session.created",
        "session.attached",
        "session.terminated",
        "placement.decided",
        "runtime.allocated",
    ] {
        assert!(types.contains(&wanted), "no {wanted} in {types:?}");
    }
    let allocated = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "runtime.allocated")
        .unwrap();
    assert_eq!(
        format!(
            "local/default@{}",
            allocated["details"]["image_digest"].as_str().unwrap()
        ),
        default_image()
    );
    let placed = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "placement.decided")
        .unwrap();
    assert_eq!(placed["details"]["reasons"][0], "FOG_LOWEST_LATENCY");

    // Pagination and filters.
    let page = api
        .get(&alice, "/v1/events?limit=2", "/v1/events")
        .await
        .body;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().expect("more pages").to_owned();
    let next = api
        .get(
            &alice,
            &format!("/v1/events?limit=2&cursor={cursor}"),
            "/v1/events",
        )
        .await
        .body;
    assert!(next["items"][0]["seq"].as_u64() > page["items"][1]["seq"].as_u64());
    let terminated = api
        .get(
            &alice,
            "/v1/events?event_type=session.terminated&outcome=success",
            "/v1/events",
        )
        .await
        .body;
    assert_eq!(terminated["items"].as_array().unwrap().len(), 2);
    assert!(terminated.get("next_cursor").is_none());
    let one = api
        .call(
            "GET",
            &format!("/v1/events/{}", allocated["id"].as_str().unwrap()),
            "/v1/events/{id}",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(&one.body, allocated);
    let bad = api.get(&alice, "/v1/events?limit=1001", "/v1/events").await;
    assert_eq!(
        (bad.status, bad.body["code"].as_str()),
        (400, Some("ECS_INVALID_REQUEST"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_an_error_and_a_close_code_and_the_shell_carries_on() {
    let stack = Stack::start();
    let api = Api::new(&stack.api).await;
    let token = stack.issuer.token("bob", "org-b");
    let created = api.create_session(&token, 600).await;
    assert_eq!(created.status, 201, "{}", stack.logs());
    let created = created.body;
    let mut steady = attach(&created).await;
    steady.expect_frame("status", WAIT).await;

    let oversize = format!(
        r#"{{"type":"stdin","data_b64":"{}"}}"#,
        "A".repeat(200 * 1024)
    );
    let cases: [(&str, u16); 6] = [
        ("not json", 1007),
        (r#"{"type":"teleport"}"#, 1007),
        (r#"{"type":"stdin","data_b64":"@@@"}"#, 1007),
        (r#"{"type":"resize","cols":0,"rows":24}"#, 1007),
        (r#"{"type":"resize","cols":100000,"rows":24}"#, 1007),
        (&oversize, 1009),
    ];
    for (frame, close) in cases {
        let mut bad = attach(&created).await;
        bad.send_text(frame).await;
        let error = bad.expect_frame("error", WAIT).await;
        let code = if close == 1009 {
            "ECS_PAYLOAD_TOO_LARGE"
        } else {
            "ECS_INVALID_REQUEST"
        };
        assert_eq!(error["code"], code, "for {:.40}", frame);
        assert_eq!(bad.expect_close(WAIT).await, close, "for {:.40}", frame);
    }
    // The shell and the other viewer never noticed.
    steady.type_bytes(b"echo \"sti\"\"ll here\"\n").await;
    steady.expect_output("still here", WAIT).await;
}

/// Flow control: a viewer that acknowledges what it consumed keeps the shell within a small
/// window of its screen. It stops reading while `yes` floods: the shell must stop with it, so
/// what still arrives after Ctrl-C is about one window, not the megabytes the sockets between
/// would hold. And of that window the viewer draws little: the gateway's `flush` answer says
/// the tty discarded its output at the interrupt, so what was on its way is dropped too —
/// unless a program with ISIG off took the Ctrl-C as a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledging_viewer_holds_a_flood_and_drops_what_ctrl_c_made_stale() {
    let stack = Stack::start();
    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");
    let created = api.create_session(&alice, 600).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let mut viewer = attach(&created.body).await;
    viewer.acknowledge();
    viewer.expect_output("$ ", WAIT).await;
    viewer.type_bytes(b"yes\n").await;
    viewer.expect_output("y\r\ny\r\n", WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    viewer.output.clear();
    let received_before = viewer.received;
    viewer.type_bytes(b"\x03").await;
    viewer.expect_output("$ ", WAIT).await;
    let (drawn, received) = (viewer.output.len(), viewer.received - received_before);
    println!(
        "after Ctrl-C: {received} bytes arrived, {drawn} drawn, {} dropped as stale",
        viewer.dropped()
    );
    assert!(
        received < 256 * 1024,
        "{received} bytes were still queued: the flood did not wait for the viewer"
    );
    // The gateway answered the Ctrl-C: the tty flushed, so what was on its way is stale.
    let flush = viewer.expect_frame("flush", WAIT).await;
    assert_eq!(flush["discard"], true, "{flush}");
    assert!(
        drawn < 32 * 1024,
        "{drawn} bytes drawn after Ctrl-C ({received} arrived): stale output was not dropped"
    );

    // A program with ISIG off gets Ctrl-C as a key: the answer says nothing is stale, and
    // what the viewer held is drawn.
    viewer.frames.clear();
    viewer
        .type_bytes(b"stty -isig; echo raw''mode; cat; stty isig\n")
        .await;
    viewer.expect_output("rawmode", WAIT).await;
    viewer.type_bytes(b"\x03").await;
    let flush = viewer.expect_frame("flush", WAIT).await;
    assert_eq!(flush["discard"], false, "{flush}");
    viewer.type_bytes(b"kept\n\x04").await;
    viewer.expect_output("kept\r\n\x03kept", WAIT).await;
}

/// The cgroup directories under `root` (a few levels deep) named `name`.
fn cgroup_dirs_named(
    root: &std::path::Path,
    name: &str,
    depth: u32,
    found: &mut Vec<std::path::PathBuf>,
) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if entry.file_name() == name {
            found.push(path);
        } else if depth > 0 {
            cgroup_dirs_named(&path, name, depth - 1, found);
        }
    }
}

/// The runtime contract's `enforce_limits`: the coordinator reads a session's limits back
/// after it starts (audited) and every `--limits-check-interval`; a session whose cgroup
/// stops holding them — its process limit lifted behind the agent's back — is ended, with
/// the evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_limits_stop_holding_is_ended() {
    let mut stack = Stack::coordinator_only(&["--limits-check-interval", "1s"]);
    stack.add(&NodeSpec::new("fog-a"));
    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");
    let created = api.create_session(&alice, 600).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["session_id"].as_str().unwrap().to_owned();
    let checks = || async {
        api.events(&alice, "session.limits_checked")
            .await
            .into_iter()
            .filter(|e| e["details"]["session_id"] == id.as_str())
            .collect::<Vec<Value>>()
    };
    let deadline = std::time::Instant::now() + WAIT;
    while checks().await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no limits check after the start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = checks().await;
    assert_eq!(first[0]["outcome"], "success", "{first:?}");
    assert_eq!(first[0]["actor"]["node_id"], "fog-a");
    assert_eq!(first[0]["details"]["mismatches"], json!([]));
    // Passing checks after the first are not audited.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(checks().await.len(), 1);
    assert_eq!(api.session_status(&alice, &id).await, "running");

    let container = format!("fs-{}", id.replace('-', ""));
    let mut dirs = Vec::new();
    cgroup_dirs_named(
        std::path::Path::new("/sys/fs/cgroup"),
        &container,
        6,
        &mut dirs,
    );
    let pids_max = dirs
        .iter()
        .map(|d| d.join("pids.max"))
        .find(|f| f.exists())
        .unwrap_or_else(|| panic!("no pids.max for {container} in {dirs:?}"));
    std::fs::write(&pids_max, "max").expect("lifting the session's process limit");

    api.wait_for_status(&alice, &id, "terminated", WAIT).await;
    let checks = checks().await;
    let failed = checks.last().unwrap();
    assert_eq!(failed["outcome"], "failure", "{checks:?}");
    assert_eq!(
        failed["details"]["mismatches"],
        json!(["pids: wanted 256, found unlimited"])
    );
    let ended = api
        .events(&alice, "session.terminated")
        .await
        .into_iter()
        .find(|e| e["details"]["session_id"] == id.as_str())
        .expect("a session.terminated");
    assert_eq!(ended["details"]["cause"], "limits_not_enforced", "{ended}");
    stack.verify_audit();
}

/// One tenant's flood of viewers cannot lock another out. 300 viewers through one reused
/// token get their tenant's share — more than a QUIC link's default 100 streams, so the
/// node's own `max_terminals` is what counts — and the rest are refused before the upgrade
/// with evidence; another tenant's terminal on the same node works all the while, and a
/// viewer that goes gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_viewers_from_one_tenant_does_not_lock_out_another() {
    let mut stack = Stack::coordinator_only(&[
        "--max-viewers-per-session",
        "1000",
        "--max-viewers-per-tenant",
        "150",
    ]);
    stack.add(&NodeSpec::new("fog-a"));
    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");
    let bob = stack.issuer.token("bob", "org-b");
    let admin = stack.issuer.token("admin", "ops");
    let flooded = api.create_session(&alice, 600).await;
    assert_eq!(flooded.status, 201, "{}", flooded.body);
    let ws_url = flooded.body["attach"]["ws_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = flooded.body["attach"]["token"].as_str().unwrap().to_owned();

    let mut held = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..300 {
        match Viewer::connect(&ws_url, &token, 80, 24).await {
            Ok(viewer) => held.push(viewer),
            Err(refusal) => refused.push(refusal),
        }
    }
    assert_eq!((held.len(), refused.len()), (150, 150));
    for refusal in &refused {
        assert_eq!(
            (refusal.status, refusal.body["code"].as_str()),
            (429, Some("ECS_RATE_LIMITED")),
            "{}",
            refusal.body
        );
    }
    let pointer = refused[0].body["evidence_pointer"]
        .as_str()
        .expect("evidence");
    let evidence = api.get(&admin, pointer, "/v1/events/{id}").await;
    assert_eq!(
        evidence.body["details"]["rule_id"], "pty.viewer_limit",
        "{}",
        evidence.body
    );
    // The 150 refusals are not 150 durable writes: the address's budget records 30 at once.
    let written = api
        .events(&admin, "policy.denied")
        .await
        .into_iter()
        .filter(|e| e["details"]["rule_id"] == "pty.viewer_limit")
        .count();
    assert!(
        (30..=35).contains(&written),
        "{written} records for 150 refusals"
    );

    // The 150th terminal on fog-a's link carries keystrokes.
    let last = held.last_mut().unwrap();
    last.type_bytes(b"echo \"hun\"\"dred and fifty\"\n").await;
    last.expect_output("hundred and fifty", WAIT).await;

    // Another tenant is not held back.
    let other = api.create_session(&bob, 600).await;
    assert_eq!(other.status, 201, "{}", other.body);
    let mut viewer = Viewer::attach(&other.body["attach"]).await;
    viewer.type_bytes(b"echo \"not \"\"locked out\"\n").await;
    viewer.expect_output("not locked out", WAIT).await;

    // A viewer that goes gives its place back.
    drop(held.pop());
    let deadline = std::time::Instant::now() + WAIT;
    let mut again = loop {
        match Viewer::connect(&ws_url, &token, 80, 24).await {
            Ok(viewer) => break viewer,
            Err(refusal) if refusal.status == 429 && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(refusal) => panic!("{} {}", refusal.status, refusal.body),
        }
    };
    again.type_bytes(b"echo \"ba\"\"ck\"\n").await;
    again.expect_output("back", WAIT).await;
}

/// A viewer that vanished without closing — it answers no pings — is dropped after
/// `--viewer-silence`, and its place is given back to the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_answers_no_pings_is_dropped_and_its_place_given_back() {
    let mut stack =
        Stack::coordinator_only(&["--max-viewers-per-session", "1", "--viewer-silence", "2s"]);
    stack.add(&NodeSpec::new("fog-a"));
    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");
    let created = api.create_session(&alice, 600).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let ws_url = created.body["attach"]["ws_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = created.body["attach"]["token"].as_str().unwrap().to_owned();

    // Never read from again: pings go unanswered, as from a closed laptop.
    let _vanished = Viewer::connect(&ws_url, &token, 80, 24)
        .await
        .unwrap_or_else(|r| panic!("{} {}", r.status, r.body));
    let started = std::time::Instant::now();
    let refused = Viewer::connect(&ws_url, &token, 80, 24)
        .await
        .expect_err("one viewer per session while the first holds its place");
    assert_eq!(refused.status, 429, "{}", refused.body);
    let mut viewer = loop {
        match Viewer::connect(&ws_url, &token, 80, 24).await {
            Ok(viewer) => break viewer,
            Err(refusal) if refusal.status == 429 && started.elapsed() < WAIT => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(refusal) => panic!("{} {}", refusal.status, refusal.body),
        }
    };
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "the silent viewer went too soon: {waited:?}"
    );
    viewer.type_bytes(b"echo \"pla\"\"ce\"\n").await;
    viewer.expect_output("place", WAIT).await;
}
