//! Placement over 10 000 synthetic nodes (goal: ≤ 1 ms p99 per decision).
//!
//!     cargo bench -p fogshell-shared --bench placement
//!     (FOGSHELL_BENCH_NODES=10000 and FOGSHELL_BENCH_DECISIONS=2000 by default)
//!
//! The fleet mixes what a real one has: 40 regions in 4 jurisdictions, a tenth of the nodes
//! cloud, some full, some under pressure, some disconnected, RTTs from 1 to 120 ms. The
//! decisions rotate through four kinds of request — no hint, a client region with the
//! latency table, a jurisdiction with measured RTTs, and a failover — so no branch is left
//! out. Prints p50, p99 and max per decision, and how many decisions found a node.

use std::hint::black_box;
use std::time::{Duration, Instant};

use fogshell_shared::ids::LabelValue;
use fogshell_shared::node::{Arch, Health, Load, NodeState, NodeView, Resources, RuntimeDriver};
use fogshell_shared::placement::{LatencyTable, PlacementHint, PlacementRequest, place};
use fogshell_shared::profile::Profile;
use fogshell_shared::{NodeId, Region, Timestamp, TrustTier};

const REGIONS: usize = 40;
const JURISDICTIONS: [&str; 4] = ["eu", "us", "uk", "ap"];

/// A small deterministic generator (xorshift), so every run places on the same fleet.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn region(i: usize) -> Region {
    Region::new(format!("region-{i}")).unwrap()
}

fn fleet(count: usize, rng: &mut Rng) -> Vec<NodeView> {
    (0..count)
        .map(|i| {
            let region_index = rng.below(REGIONS as u64) as usize;
            let cloud = rng.below(10) == 0;
            let mut free = Resources {
                cpu_millis: 4000,
                memory_bytes: 8 << 30,
                session_slots: 20,
            };
            if rng.below(5) == 0 {
                free.session_slots = 0;
            }
            let mut labels = fogshell_shared::node::Labels::new();
            labels.insert(
                "jurisdiction".parse().unwrap(),
                JURISDICTIONS[region_index % JURISDICTIONS.len()]
                    .parse()
                    .unwrap(),
            );
            labels.insert(
                "site".parse().unwrap(),
                format!("site-{}", i % 97).parse().unwrap(),
            );
            NodeView {
                node_id: NodeId::new(format!("node-{i}")).unwrap(),
                state: if rng.below(50) == 0 {
                    NodeState::Disconnected
                } else {
                    NodeState::Connected
                },
                trust_tier: if cloud {
                    TrustTier::Cloud
                } else if rng.below(3) == 0 {
                    TrustTier::Attested
                } else {
                    TrustTier::Unattested
                },
                region: region(region_index),
                labels,
                arch: Arch::X86_64,
                agent_version: "0.1.0".into(),
                runtime_drivers: vec![RuntimeDriver::Libcontainer],
                capacity: Resources {
                    cpu_millis: 4000,
                    memory_bytes: 8 << 30,
                    session_slots: 20,
                },
                free,
                health: Health {
                    disk_pressure: rng.below(40) == 0,
                    memory_pressure: false,
                },
                load: Load {
                    load1_milli: rng.below(4000) as u32,
                },
                running: Vec::new(),
                rtt_us: 1000 + rng.below(119_000),
                last_heartbeat: Timestamp::UNIX_EPOCH,
                gateway_url: None,
            }
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let nodes_count = env("FOGSHELL_BENCH_NODES", 10_000);
    let decisions = env("FOGSHELL_BENCH_DECISIONS", 2000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let nodes = fleet(nodes_count, &mut rng);

    let mut table = LatencyTable::new();
    for a in 0..REGIONS {
        for b in a + 1..REGIONS {
            table.insert(region(a), region(b), 5 + rng.below(150) as u32);
        }
    }
    let profile = Profile::DEFAULT;
    let from_region = PlacementHint {
        client_region: Some(region(3)),
        ..Default::default()
    };
    let measured = PlacementHint {
        region_rtt_ms: (0..8).map(|i| (region(i * 5), 10 + i as u32 * 7)).collect(),
        ..Default::default()
    };
    let eu: [LabelValue; 1] = ["eu".parse().unwrap()];
    let lost = NodeId::new("node-1").unwrap();

    let mut times = Vec::with_capacity(decisions);
    let mut placed = 0usize;
    for i in 0..decisions {
        let mut request = PlacementRequest {
            profile: &profile,
            hint: None,
            jurisdictions: &[],
            latency: &table,
            failover_from: None,
        };
        match i % 4 {
            0 => {}
            1 => request.hint = Some(&from_region),
            2 => {
                request.hint = Some(&measured);
                request.jurisdictions = &eu;
            }
            _ => request.failover_from = Some(&lost),
        }
        let start = Instant::now();
        let decision = black_box(place(black_box(&request), black_box(&nodes)));
        times.push(start.elapsed());
        placed += usize::from(decision.is_ok());
    }
    times.sort();
    println!(
        "placement over {nodes_count} nodes, {decisions} decisions ({placed} placed): p50 {:?}  p99 {:?}  max {:?}  (goal p99 <= 1 ms)",
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        times[times.len() - 1]
    );
}
