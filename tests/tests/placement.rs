//! Placement on a fog topology with real link latency. Three nodes, each an agent in a network
//! namespace of its own on one bridge (198.18.1.0/24), each link through a userspace relay
//! that delays its QUIC datagrams each way (this kernel has no netem): fog-a 5 ms
//! (jurisdiction `us`, one slot), fog-b 40 ms (`eu`), cloud-1 80 ms (tier `cloud`, `eu`). The
//! coordinator learns the delays only from its own QUIC RTT estimates, and places by them.
//! A fourth node, fog-p, is the nearest of all (on loopback) but short of disk by its
//! configuration, so it reports disk pressure and takes nothing.

use std::time::{Duration, Instant};

use fogshell_e2e::api::Api;
use fogshell_e2e::stack::{NodeSpec, Stack};
use serde_json::Value;

const PROFILES: &str = r#"
[attested-only]
cpu_millis = 500
memory_bytes = 268435456
pids = 128
min_trust_tier = "attested"

[central-only]
cpu_millis = 500
memory_bytes = 268435456
pids = 128
regions = ["eu-central"]

[huge]
cpu_millis = 1000
memory_bytes = 1099511627776
pids = 128
"#;

async fn create(api: &Api, token: &str, profile: &str) -> fogshell_e2e::api::Answer {
    api.create_session_with(token, profile, 600).await
}

fn placed_on(answer: &fogshell_e2e::api::Answer) -> (&str, Vec<&str>) {
    assert_eq!(answer.status, 201, "{}", answer.body);
    let placement = &answer.body["placement"];
    let reasons = placement["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    (placement["node_id"].as_str().unwrap(), reasons)
}

/// Waits until `check` holds of `GET /v1/nodes/{id}` for every node in `ids`.
async fn wait_for_nodes(
    api: &Api,
    admin: &str,
    ids: &[&str],
    what: &str,
    check: impl Fn(&str, &Value) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut views = Vec::new();
        for id in ids {
            views.push(
                api.get(admin, &format!("/v1/nodes/{id}"), "/v1/nodes/{id}")
                    .await
                    .body,
            );
        }
        if ids.iter().zip(&views).all(|(id, view)| check(id, view)) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} never held: {views:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_go_to_the_nearest_node_that_qualifies() {
    let profiles = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(profiles.path(), PROFILES).unwrap();
    let mut stack = Stack::coordinator_only(&[
        "--tenant-jurisdiction",
        "org-eu=eu",
        "--profiles",
        profiles.path().to_str().unwrap(),
    ]);
    let ms = Duration::from_millis;
    stack.add(&NodeSpec {
        labels: &[("jurisdiction", "us")],
        slots: 1,
        delay: Some(ms(5)),
        netns: true,
        ..NodeSpec::new("fog-a")
    });
    stack.add(&NodeSpec {
        labels: &[("jurisdiction", "eu")],
        delay: Some(ms(40)),
        netns: true,
        ..NodeSpec::new("fog-b")
    });
    stack.add(&NodeSpec {
        tier: "cloud",
        region: "eu-central",
        labels: &[("jurisdiction", "eu")],
        delay: Some(ms(80)),
        netns: true,
        ..NodeSpec::new("cloud-1")
    });
    stack.add(&NodeSpec {
        // More than any disk has: always under pressure.
        disk_free_min_bytes: i64::MAX as u64,
        ..NodeSpec::new("fog-p")
    });
    let api = Api::new(&stack.api).await;
    let admin = stack.issuer.token("admin", "ops");
    wait_for_nodes(&api, &admin, &["fog-p"], "disk pressure", |_, view| {
        view["health"]["disk_pressure"] == true
    })
    .await;
    // The operator reads why in the node's log.
    stack.wait_for_log("fog-p.log", "under pressure: taking no new sessions");

    // The coordinator measures each link's round trip (twice the one-way delay) itself.
    let floor = |id: &str| match id {
        "fog-a" => 10_000,
        "fog-b" => 80_000,
        _ => 160_000,
    };
    wait_for_nodes(
        &api,
        &admin,
        &["fog-a", "fog-b", "cloud-1"],
        "measured RTTs",
        |id, view| {
            let rtt = view["rtt_us"].as_u64().unwrap_or(0);
            rtt >= floor(id) && rtt < floor(id) + 30_000
        },
    )
    .await;

    let alice = stack.issuer.token("alice", "org-x");
    let first = create(&api, &alice, "default").await;
    let (node, reasons) = placed_on(&first);
    assert_eq!(node, "fog-a");
    assert_eq!(reasons[0], "FOG_LOWEST_LATENCY");
    assert!(reasons.contains(&"REJECT_UNHEALTHY"), "{reasons:?}");

    // fog-a's one slot is taken at once, before its heartbeat says so: the next goes to fog-b.
    let second = create(&api, &alice, "default").await;
    let (node, reasons) = placed_on(&second);
    assert_eq!(node, "fog-b");
    assert!(reasons.contains(&"REJECT_CAPACITY"), "{reasons:?}");

    // A tenant confined to `eu` never lands on fog-a.
    let eve = stack.issuer.token("eve", "org-eu");
    let confined = create(&api, &eve, "default").await;
    let (node, reasons) = placed_on(&confined);
    assert_eq!(node, "fog-b");
    assert!(reasons.contains(&"REJECT_LOCALITY"), "{reasons:?}");

    // Only unattested fog nodes: an attested-only profile falls back to the trusted cloud.
    let strict = create(&api, &alice, "attested-only").await;
    let (node, reasons) = placed_on(&strict);
    assert_eq!(node, "cloud-1");
    assert_eq!(reasons[0], "FALLBACK_CLOUD_TRUST_TIER");

    // A profile that demands a region only the cloud node stands in.
    let central = create(&api, &alice, "central-only").await;
    let (node, reasons) = placed_on(&central);
    assert_eq!(node, "cloud-1");
    assert_eq!(reasons[0], "FALLBACK_CLOUD_LOCALITY");

    // Nothing fits at all: 503 with evidence naming the rule.
    let refused = create(&api, &alice, "huge").await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.body["code"], "ECS_NO_CAPACITY");
    let message = refused.body["message"].as_str().unwrap();
    assert!(message.contains("3 without capacity"), "{message}");
    assert!(
        message.contains("1 not connected or unhealthy (fog-p)"),
        "{message}"
    );
    let pointer = refused.body["evidence_pointer"].as_str().unwrap();
    let event = api.get(&admin, pointer, "/v1/events/{id}").await;
    assert_eq!(
        event.body["details"]["rule_id"], "placement.no_node",
        "{}",
        event.body
    );

    // Every decision is in the audit log with its reasons.
    let decided = api
        .get(
            &admin,
            "/v1/events?event_type=placement.decided",
            "/v1/events",
        )
        .await;
    assert_eq!(
        decided.body["items"].as_array().unwrap().len(),
        5,
        "{}",
        decided.body
    );
    stack.verify_audit();
}
