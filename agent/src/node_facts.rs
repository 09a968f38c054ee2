//! What a node reports about itself: capacity, free resources, pressure and load, read from
//! `/proc` and the state directory's file system.

use std::path::Path;

use fogshell_shared::ResourceLimits;
use fogshell_shared::Resources;
use fogshell_shared::node::{Health, Load};
use serde::Deserialize;

/// `[pressure]` in the agent's configuration: how little room puts the node under pressure,
/// when it takes no new sessions (it keeps those it runs).
///
/// The defaults are a share of the node, capped: a session needs the same room on a large
/// disk as on a small one, so a 2 TB disk with 50 GB free is not short of space, while an SD
/// card's 5 % is all a handful of sessions have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pressure {
    /// Disk pressure below this many bytes free on the state directory's file system;
    /// default 5 % of that file system, at most 2 GiB.
    #[serde(default)]
    pub disk_free_min_bytes: Option<u64>,
    /// Memory pressure below this many bytes available (`MemAvailable`); default 10 % of
    /// memory, at most 1 GiB.
    #[serde(default)]
    pub memory_available_min_bytes: Option<u64>,
}

const DISK_FLOOR_CAP: u64 = 2 << 30;
const MEMORY_FLOOR_CAP: u64 = 1 << 30;

/// Room left on the node: `(total, free)` bytes of memory and of the state directory's file
/// system, where they could be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Room {
    /// `MemTotal` and `MemAvailable`.
    pub memory: Option<(u64, u64)>,
    /// The file system's size and the bytes an unprivileged writer may still use.
    pub disk: Option<(u64, u64)>,
}

impl Pressure {
    /// The free disk bytes below which a file system of `size` bytes is under pressure.
    pub fn disk_floor(&self, size: u64) -> u64 {
        self.disk_free_min_bytes
            .unwrap_or((size / 20).min(DISK_FLOOR_CAP))
    }

    /// The available memory below which a node of `total` bytes is under pressure.
    pub fn memory_floor(&self, total: u64) -> u64 {
        self.memory_available_min_bytes
            .unwrap_or((total / 10).min(MEMORY_FLOOR_CAP))
    }

    /// Whether `room` is under pressure. What could not be read is not pressure: a node that
    /// cannot read `/proc` has bigger problems, and refusing all work would hide them.
    pub fn judge(&self, room: &Room) -> Health {
        Health {
            memory_pressure: room
                .memory
                .is_some_and(|(total, available)| available < self.memory_floor(total)),
            disk_pressure: room
                .disk
                .is_some_and(|(size, free)| size > 0 && free < self.disk_floor(size)),
        }
    }
}

/// `MemTotal` and `MemAvailable` from `/proc/meminfo` text, in bytes.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// The 1-minute load average from `/proc/loadavg` text, in thousandths.
pub fn parse_loadavg(text: &str) -> Option<Load> {
    let first: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Load {
        load1_milli: (first * 1000.0).round().clamp(0.0, u32::MAX as f64) as u32,
    })
}

/// The node's totals: all CPUs, all memory, the configured session slots.
pub fn capacity(session_slots: u32) -> Resources {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo(&t))
        .map_or(0, |(total, _)| total);
    Resources {
        cpu_millis: cpus * 1000,
        memory_bytes: memory,
        session_slots,
    }
}

/// Free resources: the totals less what the running sessions' limits reserve.
pub fn free(capacity: Resources, running: &[ResourceLimits]) -> Resources {
    let cpu: u64 = running.iter().map(|l| u64::from(l.cpu_millis)).sum();
    let memory: u64 = running.iter().map(|l| l.memory_bytes).sum();
    Resources {
        cpu_millis: u32::try_from(u64::from(capacity.cpu_millis).saturating_sub(cpu)).unwrap_or(0),
        memory_bytes: capacity.memory_bytes.saturating_sub(memory),
        session_slots: capacity.session_slots.saturating_sub(running.len() as u32),
    }
}

/// Room now: memory from `/proc/meminfo`, disk from the state directory's file system.
pub fn room(state_dir: &Path) -> Room {
    Room {
        memory: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| parse_meminfo(&t)),
        disk: rustix::fs::statvfs(state_dir).ok().map(|s| {
            (
                s.f_blocks.saturating_mul(s.f_frsize),
                s.f_bavail.saturating_mul(s.f_frsize),
            )
        }),
    }
}

/// The load average now.
pub fn load() -> Load {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| parse_loadavg(&t))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let meminfo =
            "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   12288000 kB\n";
        assert_eq!(
            parse_meminfo(meminfo),
            Some((24_576_000 * 1024, 12_288_000 * 1024))
        );
        assert_eq!(parse_meminfo("nothing"), None);
        assert_eq!(
            parse_loadavg("1.50 0.80 0.20 2/300 1234")
                .unwrap()
                .load1_milli,
            1500
        );
        assert_eq!(parse_loadavg(""), None);
    }

    #[test]
    fn pressure_is_a_capped_share_of_the_node_unless_configured() {
        const GIB: u64 = 1 << 30;
        let defaults = Pressure::default();
        let room = |memory, disk| Room {
            memory: Some(memory),
            disk: Some(disk),
        };
        // A large disk with 12 GiB free (under 5 %) and 24 GiB of memory with 2 GiB available
        // (under 10 %): room for many sessions, so no pressure.
        let big = room((24 * GIB, 2 * GIB), (250 * GIB, 12 * GIB));
        assert!(defaults.judge(&big).is_healthy());
        // Under the caps: pressure.
        let short = defaults.judge(&room((24 * GIB, GIB - 1), (250 * GIB, 2 * GIB - 1)));
        assert!(short.memory_pressure && short.disk_pressure);
        // A small node: the share decides (5 % of 16 GiB is 0.8 GiB).
        let card = room((GIB, 200 << 20), (16 * GIB, 900 << 20));
        assert!(defaults.judge(&card).is_healthy());
        let card = room((GIB, 100 << 20), (16 * GIB, 800 << 20));
        assert!(defaults.judge(&card).memory_pressure);
        assert!(defaults.judge(&card).disk_pressure);
        // Configured floors win over the defaults, either way.
        let strict = Pressure {
            disk_free_min_bytes: Some(100 * GIB),
            memory_available_min_bytes: Some(0),
        };
        let judged = strict.judge(&big);
        assert!(judged.disk_pressure && !judged.memory_pressure);
        // What could not be read is no pressure, nor is an empty file system (procfs-like).
        assert!(strict.judge(&Room::default()).is_healthy());
        assert!(strict.judge(&room((GIB, GIB), (0, 0))).is_healthy());
    }

    #[test]
    fn running_sessions_reserve_their_limits() {
        let total = Resources {
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
            session_slots: 4,
        };
        let free = free(
            total,
            &[
                ResourceLimits::DEFAULT,
                ResourceLimits::DEFAULT,
                ResourceLimits::DEFAULT,
            ],
        );
        assert_eq!(free.cpu_millis, 0, "never below zero");
        assert_eq!(free.memory_bytes, 0);
        assert_eq!(free.session_slots, 1);
    }

    #[test]
    fn this_machine_reports_something_sane() {
        let capacity = capacity(8);
        assert!(capacity.cpu_millis >= 1000 && capacity.memory_bytes > 0);
        let room = room(Path::new("/"));
        let (size, free) = room.disk.expect("statvfs of /");
        assert!(size > 0 && free <= size, "{room:?}");
        let (total, available) = room.memory.expect("/proc/meminfo");
        assert!(total > 0 && available <= total, "{room:?}");
    }
}
