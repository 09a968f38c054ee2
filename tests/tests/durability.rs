//! What survives what: a coordinator killed with SIGKILL comes back with every session and
//! acknowledged audit event, and a running shell can be attached again; a create the kill
//! cut off is settled at its node's next hello, either way; a session's TTL ends it on its
//! node.

use std::time::Duration;

use fogshell_e2e::api::Api;
use fogshell_e2e::stack::{NodeSpec, Stack};
use fogshell_e2e::ws::Viewer;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_shell_survives_a_coordinator_killed_mid_session() {
    let mut stack = Stack::start();
    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");
    let created = api.create_session(&alice, 3600).await;
    assert_eq!(created.status, 201, "{}\n{}", created.body, stack.logs());
    let id = created.body["session_id"].as_str().unwrap().to_owned();
    let mut viewer = Viewer::attach(&created.body["attach"]).await;
    viewer
        .type_bytes(b"export KEPT=\"sur\"\"vived\"; echo \"rea\"\"dy\"\n")
        .await;
    viewer.expect_output("ready", WAIT).await;
    let before = api
        .get(&alice, "/v1/events?limit=1000", "/v1/events")
        .await
        .body["items"]
        .clone();

    stack.restart_coordinator();
    // The viewer's socket went with the old process.
    viewer.expect_close(WAIT).await;
    stack.wait_for_node("connected");
    let api = Api::new(&stack.api).await;

    // Nothing acknowledged was lost.
    let after = api
        .get(&alice, "/v1/events?limit=1000", "/v1/events")
        .await
        .body["items"]
        .clone();
    let after: Vec<Value> = after.as_array().unwrap().clone();
    for event in before.as_array().unwrap() {
        assert!(after.contains(event), "lost {event}");
    }
    let session = api
        .get(&alice, &format!("/v1/sessions/{id}"), "/v1/sessions/{id}")
        .await;
    assert_eq!(session.body["status"], "running", "{}", stack.logs());

    // Attach tokens died with the old process's key; a fresh one opens the same shell.
    let stale = Viewer::connect(
        created.body["attach"]["ws_url"].as_str().unwrap(),
        created.body["attach"]["token"].as_str().unwrap(),
        80,
        24,
    )
    .await
    .expect_err("a token from before the restart");
    assert_eq!(stale.status, 401);
    let renewed = api.reattach(&alice, &id).await;
    assert_eq!(renewed.status, 200, "{}", renewed.body);
    let mut viewer = Viewer::attach(&renewed.body).await;
    // What scrolled by before is replayed, and the shell still has its state.
    viewer.expect_output("ready", WAIT).await;
    viewer.type_bytes(b"echo \"$KEPT\"\n").await;
    viewer.expect_output("survived", WAIT).await;

    stack.verify_audit();
}

/// A stack whose node fog-a is a second away from the coordinator each way, so a create's
/// `Allocate` and its answer are long in flight (and lost, when `cut` cuts the link first);
/// and a session asked of it with the early answer (`Prefer: respond-async`), so the test
/// holds its id while the start is under way.
async fn far_node_and_a_start_under_way(cut: bool) -> (Stack, String, String) {
    let mut stack = Stack::coordinator_only(&["--node-lost-after", "12s"]);
    stack.add(&NodeSpec {
        delay: Some(Duration::from_secs(1)),
        ..NodeSpec::new("fog-a")
    });
    if cut {
        stack.relay("fog-a").expect("fog-a's relay").cut();
    }
    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");
    let created = api
        .create_session_async(&alice, &json!({"profile": "default", "ttl_seconds": 600}))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["session_id"].as_str().unwrap().to_owned();
    (stack, alice, id)
}

/// The session's `runtime.allocated` events, as `(outcome, actor kind)`.
async fn allocations(api: &Api, token: &str, id: &str) -> Vec<(Value, Value)> {
    api.events(token, "runtime.allocated")
        .await
        .iter()
        .filter(|e| e["details"]["session_id"] == id)
        .map(|e| (e["outcome"].clone(), e["actor"]["kind"].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_cut_off_after_the_node_started_it_is_adopted_at_its_hello() {
    let (mut stack, alice, id) = far_node_and_a_start_under_way(false).await;
    // The node has started it; its answer is still a second from the coordinator.
    stack.wait_for_log("fog-a.log", "container started");
    stack.restart_coordinator();
    let api = Api::new(&stack.api).await;
    api.wait_for_status(&alice, &id, "running", WAIT).await;
    assert_eq!(
        allocations(&api, &alice, &id).await,
        vec![(json!("success"), json!("node"))],
        "the runtime.allocated it never got, once\n{}",
        stack.logs()
    );
    // It is the node's running shell, not a record only.
    let renewed = api.reattach(&alice, &id).await;
    assert_eq!(renewed.status, 200, "{}", renewed.body);
    let mut viewer = Viewer::attach(&renewed.body).await;
    viewer.type_bytes(b"echo \"adop\"\"ted\"\n").await;
    viewer.expect_output("adopted", WAIT).await;
    stack.verify_audit();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_cut_off_before_the_node_started_it_fails_at_its_hello() {
    // The `Allocate` is lost with the coordinator that sent it: the link was cut.
    let (mut stack, alice, id) = far_node_and_a_start_under_way(true).await;
    stack.restart_coordinator();
    stack.relay("fog-a").expect("fog-a's relay").restore();
    let api = Api::new(&stack.api).await;
    api.wait_for_status(&alice, &id, "failed", WAIT).await;
    assert_eq!(
        allocations(&api, &alice, &id).await,
        vec![(json!("failure"), json!("system"))],
        "{}",
        stack.logs()
    );
    // The node and the API agree: fog-a runs nothing.
    let admin = stack.issuer.token("admin", "ops");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let node = api.get(&admin, "/v1/nodes/fog-a", "/v1/nodes/{id}").await;
        if node.body["state"] == "connected" && node.body["running"] == json!([]) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", node.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack.verify_audit();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_ttl_runs_out() {
    let stack = Stack::start();
    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");
    let created = api.create_session(&alice, 60).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["session_id"].as_str().unwrap().to_owned();
    let mut viewer = Viewer::attach(&created.body["attach"]).await;
    viewer.expect_frame("status", WAIT).await;
    // The shortest TTL the API allows is a minute; the reaper looks every second.
    let exit = viewer.expect_frame("exit", Duration::from_secs(75)).await;
    assert_eq!(exit["code"], 137, "killed: 128 + SIGKILL");
    let session = api
        .get(&alice, &format!("/v1/sessions/{id}"), "/v1/sessions/{id}")
        .await;
    assert_eq!(session.body["status"], "terminated");
    let ended = api
        .get(
            &alice,
            "/v1/events?event_type=session.terminated",
            "/v1/events",
        )
        .await
        .body;
    assert_eq!(ended["items"][0]["details"]["cause"], "expired", "{ended}");
    assert_eq!(ended["items"][0]["actor"]["kind"], "system");
}
