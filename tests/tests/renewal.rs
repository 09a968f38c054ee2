//! Node certificates renew over the link before they expire, without dropping a session:
//! with a 12 s lifetime the agent asks in the last third, stores the new certificate, keeps
//! its connection (no second `node.connected`), and after the first certificate expired a
//! restarted agent connects with the renewed one — its shell still there.

use std::time::{Duration, Instant};

use fogshell_e2e::api::Api;
use fogshell_e2e::stack::Stack;
use fogshell_e2e::ws::Viewer;

const WAIT: Duration = Duration::from_secs(20);
const LIFETIME: Duration = Duration::from_secs(12);

fn events_of(body: &serde_json::Value) -> usize {
    body["items"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_certificates_renew_without_dropping_sessions() {
    let mut stack = Stack::coordinator_only(&["--node-cert-lifetime", "12s"]);
    let joined = Instant::now();
    stack.add_node("fog-b", "unattested", "eu-west");
    let certificate = stack.node_dir("fog-b").join("identity/node.crt");
    let first = std::fs::read(&certificate).unwrap();

    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");
    let admin = stack.issuer.token("admin", "ops");
    let created = api.create_session(&alice, 3600).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["session_id"].as_str().unwrap().to_owned();
    let mut viewer = Viewer::attach(&created.body["attach"]).await;
    viewer
        .type_bytes(b"export KEPT=\"re\"\"newed\"; echo \"rea\"\"dy\"\n")
        .await;
    viewer.expect_output("ready", WAIT).await;

    // Renewed in the last third of its life, well before it ends.
    let deadline = joined + LIFETIME;
    while std::fs::read(&certificate).unwrap() == first {
        assert!(
            Instant::now() < deadline,
            "not renewed before the certificate expired\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let renewed = api
        .get(
            &admin,
            "/v1/events?event_type=node.certificate_renewed",
            "/v1/events",
        )
        .await;
    assert!(events_of(&renewed.body) >= 1, "{}", renewed.body);
    assert_eq!(
        renewed.body["items"][0]["details"]["node_id"], "fog-b",
        "{}",
        renewed.body
    );
    // The same connection carried on, and the terminal with it.
    viewer.type_bytes(b"echo \"still $KEPT\"\n").await;
    viewer.expect_output("still renewed", WAIT).await;
    let connected = api
        .get(&admin, "/v1/events?event_type=node.connected", "/v1/events")
        .await;
    assert_eq!(events_of(&connected.body), 1, "{}", connected.body);

    // Once the first certificate has expired, only the renewed one can connect.
    tokio::time::sleep(
        (joined + LIFETIME + Duration::from_secs(1)).saturating_duration_since(Instant::now()),
    )
    .await;
    stack.restart_node("fog-b");
    // The new connection, not the killed agent's last moments, is the one to use.
    let deadline = Instant::now() + WAIT;
    loop {
        let connected = api
            .get(&admin, "/v1/events?event_type=node.connected", "/v1/events")
            .await;
        if events_of(&connected.body) == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no second connection\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    api.wait_for_status(&alice, &id, "running", WAIT).await;
    let again = api.reattach(&alice, &id).await;
    let mut viewer = Viewer::attach(&again.body).await;
    viewer.type_bytes(b"echo \"back $KEPT\"\n").await;
    viewer.expect_output("back renewed", WAIT).await;
    stack.verify_audit();
}
