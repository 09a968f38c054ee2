//! What a node reports about itself: capacity, free resources, pressure and load, read from
//! `/proc` and the state directory's file system.

use std::path::Path;

use fogshell_shared::ResourceLimits;
use fogshell_shared::Resources;
use fogshell_shared::node::{Health, Load};

/// Below this share of memory available, the node is under memory pressure.
const MEMORY_PRESSURE_BELOW: f64 = 0.10;
/// Below this share of disk free in the state directory, the node is under disk pressure.
const DISK_PRESSURE_BELOW: f64 = 0.05;

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

/// Pressure now: memory from `/proc/meminfo`, disk from the state directory's file system.
pub fn health(state_dir: &Path) -> Health {
    let memory_pressure = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo(&t))
        .is_some_and(|(total, available)| {
            (available as f64) < total as f64 * MEMORY_PRESSURE_BELOW
        });
    let disk_pressure = rustix::fs::statvfs(state_dir).is_ok_and(|s| {
        s.f_blocks > 0 && (s.f_bavail as f64) < s.f_blocks as f64 * DISK_PRESSURE_BELOW
    });
    Health {
        disk_pressure,
        memory_pressure,
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
        let _ = health(Path::new("/"));
    }
}
