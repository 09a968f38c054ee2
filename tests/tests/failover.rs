//! Failover for real: fog-a runs in its own network namespace (198.18.0.2, reached over a
//! veth), cloud-1 — a node of tier `cloud` — on the host. A session lands on fog-a (fog beats
//! cloud); cutting fog-a's link makes it lost, and the attached terminal is told
//! interrupted → resuming → resumed and is re-bound to a fresh shell on cloud-1 without
//! reconnecting. When fog-a's link comes back, fog-a is told its copy moved and removes it:
//! never two live copies.

use std::time::{Duration, Instant};

use fogshell_e2e::api::Api;
use fogshell_e2e::stack::Stack;
use fogshell_e2e::ws::Viewer;

const WAIT: Duration = Duration::from_secs(20);

/// The bound from the cut to a working terminal in the cloud.
const FAILOVER_BOUND: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_fog_node_fails_over_to_the_cloud_and_is_fenced_when_it_returns() {
    let mut stack = Stack::start_with_netns();
    stack.add_node("cloud-1", "cloud", "eu-central");
    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");

    let created = api.create_session(&alice, 3600).await;
    assert_eq!(created.status, 201, "{}\n{}", created.body, stack.logs());
    let placement = &created.body["placement"];
    assert_eq!(
        placement["node_id"], "fog-a",
        "fog beats cloud: {placement}"
    );
    assert_eq!(placement["reasons"][0], "FOG_LOWEST_LATENCY");
    let id = created.body["session_id"].as_str().unwrap().to_owned();
    let mut viewer = Viewer::attach(&created.body["attach"]).await;
    viewer.type_bytes(b"echo \"on f\"\"og\"\n").await;
    viewer.expect_output("on fog", WAIT).await;

    let net = stack.net().expect("fog-a has its own network");
    let cut = Instant::now();
    net.cut();
    viewer.expect_status("interrupted", WAIT).await;
    let resumed = viewer.expect_status("resumed", WAIT).await;
    let resumed_after = cut.elapsed();
    assert_eq!(resumed["placement"]["node_id"], "cloud-1", "{resumed}");
    assert_eq!(resumed["placement"]["reasons"][0], "FAILOVER_NODE_LOST");
    // The same socket now reaches a shell on cloud-1.
    viewer.type_bytes(b"echo \"in the cl\"\"oud\"\n").await;
    viewer.expect_output("in the cloud", WAIT).await;
    let working_after = cut.elapsed();
    println!(
        "cut → resumed frame {resumed_after:?}, → a command answered in the cloud {working_after:?}"
    );
    assert!(
        working_after < FAILOVER_BOUND,
        "the terminal worked again only {working_after:?} after the cut"
    );
    let states: Vec<&str> = viewer
        .frames
        .iter()
        .filter(|f| f["type"] == "status")
        .filter_map(|f| f["state"].as_str())
        .collect();
    let order = ["running", "interrupted", "resuming", "resumed"];
    let positions: Vec<Option<usize>> = order
        .iter()
        .map(|s| states.iter().position(|x| x == s))
        .collect();
    assert!(
        positions.iter().all(Option::is_some) && positions.is_sorted(),
        "status frames out of order: {states:?}"
    );

    let session = api.session_status(&alice, &id).await;
    assert_eq!(session, "running");
    let view = api
        .get(&alice, &format!("/v1/sessions/{id}"), "/v1/sessions/{id}")
        .await;
    assert_eq!(
        view.body["placement"]["node_id"], "cloud-1",
        "{}",
        view.body
    );
    let events = api
        .get(&alice, "/v1/events?limit=1000", "/v1/events")
        .await
        .body["items"]
        .clone();
    for wanted in ["failover.started", "failover.completed", "node.lost"] {
        assert!(
            events
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["event_type"] == wanted),
            "no {wanted} in {events}"
        );
    }

    // fog-a returns: its stale copy is fenced off and removed.
    net.restore();
    stack.wait_for("fog-a", "connected");
    let stale = [
        stack.agent_dir().join("sessions").join(&id),
        stack
            .agent_dir()
            .join("containers")
            .join(format!("fs-{}", id.replace('-', ""))),
    ];
    let deadline = Instant::now() + WAIT;
    while stale.iter().any(|p| p.exists()) {
        assert!(
            Instant::now() < deadline,
            "fog-a kept its moved copy: {stale:?}\n{}",
            stack.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The session is untouched by the fencing: still running in the cloud.
    viewer.type_bytes(b"echo \"st\"\"ill here\"\n").await;
    viewer.expect_output("still here", WAIT).await;
    assert_eq!(api.session_status(&alice, &id).await, "running");
    stack.verify_audit();
}

/// A link that drops every datagram for a second — shorter than the loss bound — loses no
/// byte of the terminal's output and repeats none: the gateway picks the stream up again at
/// the offset where it stopped, from the node's buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_flap_loses_no_output() {
    let mut stack = Stack::coordinator_only(&[]);
    stack.add(&fogshell_e2e::stack::NodeSpec {
        delay: Some(Duration::from_millis(1)),
        ..fogshell_e2e::stack::NodeSpec::new("fog-a")
    });
    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");
    let created = api.create_session(&alice, 3600).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let mut viewer = Viewer::attach(&created.body["attach"]).await;
    viewer
        .type_bytes(
            b"for i in $(seq 1 400); do echo line-$i; sleep 0.01; done; echo fin\"\"ished\n",
        )
        .await;
    viewer.expect_output("line-20\r\n", WAIT).await;

    let relay = stack.relay("fog-a").expect("fog-a is behind a relay");
    relay.cut();
    tokio::time::sleep(Duration::from_secs(1)).await;
    relay.restore();
    viewer.expect_output("finished", WAIT).await;
    assert_eq!(
        numbered_lines(&viewer.output),
        (1..=400).collect::<Vec<u32>>(),
        "output lost or repeated across the flap; status frames: {:?}",
        viewer
            .frames
            .iter()
            .filter(|f| f["type"] == "status")
            .collect::<Vec<_>>()
    );
}

/// The numbers of the `line-N` lines in `output`, in order.
fn numbered_lines(output: &[u8]) -> Vec<u32> {
    String::from_utf8_lossy(output)
        .split("line-")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// A viewer that drops mid-output and comes back with `from_offset` — the `running` frame's
/// offset plus the bytes it received — gets exactly what it missed: every line once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_resumes_at_its_offset() {
    let mut stack = Stack::coordinator_only(&[]);
    stack.add_node("fog-a", "unattested", "eu-west");
    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");
    let created = api.create_session(&alice, 3600).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["session_id"].as_str().unwrap().to_owned();
    let mut viewer = Viewer::attach(&created.body["attach"]).await;
    let running = viewer.expect_status("running", WAIT).await;
    let start = running["offset"]
        .as_u64()
        .expect("a running frame carries the offset");
    viewer
        .type_bytes(
            b"for i in $(seq 1 300); do echo line-$i; sleep 0.01; done; echo fin\"\"ished\n",
        )
        .await;
    viewer.expect_output("line-40\r\n", WAIT).await;
    // Gone mid-flood, as a browser tab on a train would be.
    let received = viewer.output.clone();
    drop(viewer);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let again = api.reattach(&alice, &id).await;
    let resume_at = start + received.len() as u64;
    let mut viewer = Viewer::attach_from(&again.body, resume_at).await;
    let running = viewer.expect_status("running", WAIT).await;
    assert_eq!(running["offset"].as_u64(), Some(resume_at), "{running}");
    viewer.expect_output("finished", WAIT).await;
    let mut whole = received;
    whole.extend_from_slice(&viewer.output);
    assert_eq!(numbered_lines(&whole), (1..=300).collect::<Vec<u32>>());
}
