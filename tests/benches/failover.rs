//! Node loss → terminal live in the cloud: the time from cutting a fog node's link to a
//! command answered by the fresh shell on the cloud node, through the same WebSocket, over N
//! trials (goal ≤ 5 s; the loss bound alone is 2 s).
//!
//!     cargo build --release --workspace --bins && images/build.sh && \
//!         cargo bench -p fogshell-e2e --bench failover     (as root)
//!     (FOGSHELL_BENCH_TRIALS=20 by default)
//!
//! The real binaries, as tests/tests/failover.rs runs them: fog-a in a network namespace
//! whose veth is cut, cloud-1 on the host. Each trial restores the link and waits for fog-a
//! to be back (and its moved copy fenced) before the next. Prints p50, p99 and max.

use std::time::{Duration, Instant};

use fogshell_e2e::api::Api;
use fogshell_e2e::bench::percentile;
use fogshell_e2e::stack::Stack;
use fogshell_e2e::ws::Viewer;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let trials: usize = std::env::var("FOGSHELL_BENCH_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(20);
    let mut stack = Stack::start_with_netns();
    stack.add_node("cloud-1", "cloud", "eu-central");
    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");
    let mut resumed = Vec::with_capacity(trials);
    let mut working = Vec::with_capacity(trials);
    for trial in 0..trials {
        let created = api.create_session(&alice, 3600).await;
        assert_eq!(created.status, 201, "{}", created.body);
        assert_eq!(created.body["placement"]["node_id"], "fog-a");
        let id = created.body["session_id"].as_str().unwrap().to_owned();
        let mut viewer = Viewer::attach(&created.body["attach"]).await;
        viewer.type_bytes(b"echo \"rea\"\"dy\"\n").await;
        viewer.expect_output("ready", WAIT).await;

        let net = stack.net().expect("fog-a's own network");
        let cut = Instant::now();
        net.cut();
        viewer.expect_status("resumed", WAIT).await;
        resumed.push(cut.elapsed());
        viewer.type_bytes(b"echo \"clo\"\"ud\"\n").await;
        viewer.expect_output("cloud", WAIT).await;
        working.push(cut.elapsed());
        eprintln!("trial {trial}: {:?}", working[trial]);

        net.restore();
        stack.wait_for("fog-a", "connected");
        let path = format!("/v1/sessions/{id}");
        let deleted = api
            .call("DELETE", &path, "/v1/sessions/{id}", Some(&alice), None)
            .await;
        assert_eq!(deleted.status, 200);
    }
    resumed.sort();
    working.sort();
    for (what, times) in [("resumed frame", &resumed), ("command answered", &working)] {
        println!(
            "cut → {what} over {trials} trials: p50 {:?}  p99 {:?}  max {:?}  (goal <= 5 s)",
            percentile(times, 0.50),
            percentile(times, 0.99),
            times[times.len() - 1]
        );
    }
}
