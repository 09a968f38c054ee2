//! Reading a container's limits and usage back from its cgroup files, on cgroup v1 (each
//! controller its own hierarchy, as on this project's build machines) or v2 (one unified
//! hierarchy). libcontainer writes the limits; this reads what the kernel actually holds, so
//! `enforce_limits` reports the truth rather than what was asked.

use std::path::{Path, PathBuf};

use fogshell_shared::ResourceLimits;
use fogshell_shared::wire::Usage;

/// Which cgroup layout the host has, as libcontainer uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Controllers under `<root>/<controller>/`.
    V1 {
        /// Usually `/sys/fs/cgroup`.
        root: PathBuf,
    },
    /// One tree under `<root>/`.
    V2 {
        /// Usually `/sys/fs/cgroup`.
        root: PathBuf,
    },
}

impl Layout {
    /// The host's layout: v1 when the memory controller has its own hierarchy (hybrid hosts
    /// included, where libcontainer also uses v1), else v2.
    pub fn detect() -> Self {
        let root = PathBuf::from("/sys/fs/cgroup");
        if root.join("memory/memory.limit_in_bytes").exists() {
            Self::V1 { root }
        } else {
            Self::V2 { root }
        }
    }

    /// Every directory that may hold the cgroup at `path`: on v1 one per hierarchy the host
    /// mounts (whichever controllers libcontainer used), on v2 the one.
    pub fn dirs(&self, path: &str) -> Vec<PathBuf> {
        let rel = path.trim_start_matches('/');
        match self {
            Self::V1 { root } => {
                // Co-mounted controllers appear as symlinks (`cpu` → `cpu,cpuacct`): the
                // directories alone name each hierarchy once.
                let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|entry| entry.path().join(rel))
                    .collect();
                dirs.sort();
                dirs
            }
            Self::V2 { root } => vec![root.join(rel)],
        }
    }

    /// Removes the cgroup at `path` from every hierarchy, killing what is still in it (a
    /// container's processes outlive its init by a moment: the kernel kills them when the
    /// init dies, and they must be gone before the directory can go), as libcontainer's
    /// delete does.
    pub fn remove(&self, path: &str) -> std::io::Result<()> {
        for dir in self.dirs(path) {
            remove_dir_killing(&dir)?;
        }
        Ok(())
    }

    /// The limits in force and the current usage of the cgroup at `path`.
    pub fn read(&self, path: &str) -> std::io::Result<(ResourceLimits, Usage)> {
        let rel = path.trim_start_matches('/');
        match self {
            Self::V1 { root } => {
                let at = |controller: &str, file: &str| root.join(controller).join(rel).join(file);
                let memory = parse_limit(&read(&at("memory", "memory.limit_in_bytes"))?);
                let pids = parse_limit(&read(&at("pids", "pids.max"))?);
                let quota = read(&at("cpu", "cpu.cfs_quota_us"))?;
                let period = parse_limit(&read(&at("cpu", "cpu.cfs_period_us"))?);
                let cpu = cpu_millis(quota.trim().parse::<i64>().ok().filter(|q| *q > 0), period);
                let usage = Usage {
                    memory_bytes: parse_limit(&read(&at("memory", "memory.usage_in_bytes"))?),
                    cpu_usec: parse_limit(&read(&at("cpuacct", "cpuacct.usage"))?) / 1000,
                    pids: u32::try_from(parse_limit(&read(&at("pids", "pids.current"))?))
                        .unwrap_or(u32::MAX),
                    oom_kills: stat_field(&read(&at("memory", "memory.oom_control"))?, "oom_kill"),
                };
                Ok((limits(cpu, memory, pids), usage))
            }
            Self::V2 { root } => {
                let at = |file: &str| root.join(rel).join(file);
                let memory = parse_limit(&read(&at("memory.max"))?);
                let pids = parse_limit(&read(&at("pids.max"))?);
                let cpu_max = read(&at("cpu.max"))?;
                let mut fields = cpu_max.split_whitespace();
                let quota = fields.next().and_then(|q| q.parse::<i64>().ok());
                let period = fields.next().map_or(100_000, parse_limit);
                let cpu = cpu_millis(quota, period);
                let cpu_stat = read(&at("cpu.stat"))?;
                let usage = Usage {
                    memory_bytes: parse_limit(&read(&at("memory.current"))?),
                    cpu_usec: stat_field(&cpu_stat, "usage_usec"),
                    pids: u32::try_from(parse_limit(&read(&at("pids.current"))?))
                        .unwrap_or(u32::MAX),
                    oom_kills: stat_field(&read(&at("memory.events"))?, "oom_kill"),
                };
                Ok((limits(cpu, memory, pids), usage))
            }
        }
    }
}

/// How often, and how long apart, a busy cgroup directory is tried again (libcontainer's
/// delete gives up after four tries too).
const REMOVE_TRIES: u32 = 4;
const REMOVE_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

fn remove_dir_killing(dir: &Path) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // EBUSY: processes are still in it.
            Err(error)
                if error.raw_os_error() == Some(nix::errno::Errno::EBUSY as i32)
                    && tries < REMOVE_TRIES =>
            {
                tries += 1;
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                std::thread::sleep(REMOVE_PAUSE * tries);
            }
            Err(error) => {
                return Err(std::io::Error::new(
                    error.kind(),
                    format!("removing {}: {error}", dir.display()),
                ));
            }
        }
    }
}

fn read(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// A limit file's value: a number, or `max` (and v1's huge "no limit" values) as `u64::MAX`.
pub fn parse_limit(text: &str) -> u64 {
    let text = text.trim();
    if text == "max" {
        return u64::MAX;
    }
    match text.parse::<u64>() {
        // cgroup v1 writes "no memory limit" as the largest page-aligned i64.
        Ok(n) if n >= 0x7FFF_FFFF_FFFF_F000 => u64::MAX,
        Ok(n) => n,
        Err(_) => u64::MAX,
    }
}

/// CPU limit in thousandths of a core from quota and period (no quota → unlimited).
pub fn cpu_millis(quota_usec: Option<i64>, period_usec: u64) -> u64 {
    match quota_usec {
        Some(q) if q > 0 && period_usec > 0 => (q as u64).saturating_mul(1000) / period_usec,
        _ => u64::MAX,
    }
}

/// The value of `key` in a flat-keyed file (`key value` per line); 0 when absent.
fn stat_field(stat: &str, key: &str) -> u64 {
    stat.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

fn limits(cpu: u64, memory: u64, pids: u64) -> ResourceLimits {
    ResourceLimits {
        cpu_millis: u32::try_from(cpu).unwrap_or(u32::MAX),
        memory_bytes: memory,
        pids: u32::try_from(pids).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_files_parse_as_the_kernel_writes_them() {
        assert_eq!(parse_limit("max\n"), u64::MAX);
        assert_eq!(parse_limit("536870912\n"), 536_870_912);
        assert_eq!(parse_limit("9223372036854771712\n"), u64::MAX);
        assert_eq!(cpu_millis(Some(100_000), 100_000), 1000);
        assert_eq!(cpu_millis(Some(50_000), 100_000), 500);
        assert_eq!(cpu_millis(Some(-1), 100_000), u64::MAX);
        assert_eq!(cpu_millis(None, 100_000), u64::MAX);
        assert_eq!(
            stat_field("usage_usec 1234\nuser_usec 1000\n", "usage_usec"),
            1234
        );
    }

    #[test]
    fn a_v1_cgroup_is_found_and_removed_in_every_hierarchy_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for hierarchy in ["memory", "cpu,cpuacct", "pids"] {
            std::fs::create_dir_all(root.join(hierarchy).join("fogshell/x")).unwrap();
        }
        // Co-mounted controllers are also reachable through symlinks; a plain file is no
        // hierarchy.
        std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpu")).unwrap();
        std::fs::write(root.join("README"), "").unwrap();
        let layout = Layout::V1 {
            root: root.to_path_buf(),
        };
        assert_eq!(
            layout.dirs("/fogshell/x"),
            ["cpu,cpuacct", "memory", "pids"]
                .map(|h| root.join(h).join("fogshell/x"))
                .to_vec()
        );
        // `pids` has it no more: removal goes on to the others.
        std::fs::remove_dir(root.join("pids/fogshell/x")).unwrap();
        layout.remove("/fogshell/x").unwrap();
        assert!(layout.dirs("/fogshell/x").iter().all(|d| !d.exists()));
        assert!(
            root.join("memory/fogshell").exists(),
            "only the cgroup itself goes"
        );
        // A directory that will not go is an error, not a silent leftover.
        std::fs::create_dir_all(root.join("memory/fogshell/y/child")).unwrap();
        assert!(layout.remove("/fogshell/y").is_err());
    }

    #[test]
    fn v1_and_v2_trees_read_the_same_limits() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let w = |p: &str, v: &str| {
            let path = root.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, v).unwrap();
        };
        for (file, value) in [
            ("memory/fogshell/x/memory.limit_in_bytes", "536870912\n"),
            ("memory/fogshell/x/memory.usage_in_bytes", "1048576\n"),
            ("pids/fogshell/x/pids.max", "256\n"),
            ("pids/fogshell/x/pids.current", "3\n"),
            ("cpu/fogshell/x/cpu.cfs_quota_us", "100000\n"),
            ("cpu/fogshell/x/cpu.cfs_period_us", "100000\n"),
            ("cpuacct/fogshell/x/cpuacct.usage", "5000000\n"),
            (
                "memory/fogshell/x/memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            ),
            (
                "v2/fogshell/x/memory.events",
                "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n",
            ),
            ("v2/fogshell/x/memory.max", "536870912\n"),
            ("v2/fogshell/x/memory.current", "1048576\n"),
            ("v2/fogshell/x/pids.max", "256\n"),
            ("v2/fogshell/x/pids.current", "3\n"),
            ("v2/fogshell/x/cpu.max", "100000 100000\n"),
            ("v2/fogshell/x/cpu.stat", "usage_usec 5000\n"),
        ] {
            w(file, value);
        }
        let v1 = Layout::V1 {
            root: root.to_path_buf(),
        }
        .read("/fogshell/x")
        .unwrap();
        let v2 = Layout::V2 {
            root: root.join("v2"),
        }
        .read("/fogshell/x")
        .unwrap();
        assert_eq!(v1, v2);
        assert_eq!(v1.0, ResourceLimits::DEFAULT);
        assert_eq!(
            v1.1,
            Usage {
                memory_bytes: 1 << 20,
                cpu_usec: 5000,
                pids: 3,
                oom_kills: 2,
            }
        );
    }
}
