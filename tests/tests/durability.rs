//! What survives what: a coordinator killed with SIGKILL comes back with every session and
//! acknowledged audit event, and a running shell can be attached again; a session's TTL ends
//! it on its node.

use std::time::Duration;

use fogshell_e2e::api::Api;
use fogshell_e2e::stack::Stack;
use fogshell_e2e::ws::Viewer;
use serde_json::Value;

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
