//! The link cut for real: the agent runs in its own network namespace (198.18.0.2) and
//! reaches the coordinator over a veth (198.18.0.1). Cutting the veth makes the node
//! `disconnected` (nothing is killed), then `lost` (its sessions `interrupted`, viewers told);
//! with no cloud node to fail over to, the session waits for its node; restoring the link
//! brings the node back, the session is reconciled to `running`, and the attached viewer is
//! re-bound to the same shell in its container — as is a new one.

use std::time::Duration;

use fogshell_e2e::api::Api;
use fogshell_e2e::stack::Stack;
use fogshell_e2e::ws::Viewer;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_disconnects_then_loses_the_node_and_the_shell_survives() {
    let stack = Stack::start_with_netns();
    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");
    let created = api.create_session(&alice, 3600).await;
    assert_eq!(created.status, 201, "{}\n{}", created.body, stack.logs());
    let id = created.body["session_id"].as_str().unwrap().to_owned();
    let mut viewer = Viewer::attach(&created.body["attach"]).await;
    viewer
        .type_bytes(b"export KEPT=\"thr\"\"ough\"; echo \"rea\"\"dy\"\n")
        .await;
    viewer.expect_output("ready", WAIT).await;

    let net = stack.net().expect("the agent has its own network");
    net.cut();
    stack.wait_for_node("disconnected");
    assert_eq!(
        api.session_status(&alice, &id).await,
        "running",
        "disconnected kills nothing"
    );
    stack.wait_for_node("lost");
    assert_eq!(api.session_status(&alice, &id).await, "interrupted");
    let interrupted = viewer.expect_status("interrupted", WAIT).await;
    assert!(
        interrupted["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("fog-a"),
        "{interrupted}"
    );
    // Nowhere to fail over to: the viewer is told it waits for the node.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !viewer.frames.iter().any(|f| {
        f["reason"]
            .as_str()
            .is_some_and(|r| r.contains("waiting for node fog-a to return"))
    }) {
        assert!(
            viewer
                .read_one(deadline - tokio::time::Instant::now())
                .await,
            "not told why it waits: {:?}",
            viewer.frames
        );
    }
    viewer.frames.clear();

    net.restore();
    stack.wait_for_node("connected");
    api.wait_for_status(&alice, &id, "running", WAIT).await;
    // The viewer that stayed is attached again, to the same shell.
    viewer.expect_status("running", WAIT).await;
    viewer.output.clear();
    viewer.type_bytes(b"echo \"again $KEPT\"\n").await;
    viewer.expect_output("again through", WAIT).await;
    let renewed = api.reattach(&alice, &id).await;
    let mut viewer = Viewer::attach(&renewed.body).await;
    viewer.type_bytes(b"echo \"$KEPT\"\n").await;
    viewer.expect_output("through", WAIT).await;
}
