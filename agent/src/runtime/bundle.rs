//! The OCI runtime spec (`config.json`) of a session container, as a pure function of the
//! image, the profile's limits and the session.
//!
//! What every session container gets:
//! - pid, mount, uts, ipc, network and cgroup namespaces: the shell sees no host process, no
//!   host mount, no host network (only its own loopback);
//! - the image's root filesystem read-only (it is shared by every session of the image), with
//!   tmpfs `/tmp` and a tmpfs home owned by the user;
//! - cgroup limits for memory (swap included, so the limit holds), pids and CPU;
//! - `noNewPrivileges`, a small capability set (none at all for a non-root user), masked and
//!   read-only `/proc` and `/sys` paths as runc has them, and a seccomp filter that refuses
//!   the syscalls a shell has no business making (namespaces, mounts, modules, kexec, bpf,
//!   keyrings, ptrace of others…);
//! - a terminal, handed to the shim through the console socket.

use std::path::Path;

use fogshell_shared::ResourceLimits;
use fogshell_shared::frame::TermSize;
use oci_spec::runtime::Spec;
use serde_json::{Value, json};

use crate::image::RunConfig;

/// Everything the spec depends on.
#[derive(Debug, Clone)]
pub struct BundleParams<'a> {
    /// The shared, unpacked image.
    pub rootfs: &'a Path,
    /// The image's run config.
    pub run: &'a RunConfig,
    /// The image's `/etc/passwd`, for resolving a user name and finding its home.
    pub passwd: &'a str,
    /// The image's `/etc/group`.
    pub group: &'a str,
    /// Limits from the profile.
    pub limits: ResourceLimits,
    /// Session id, for the environment.
    pub session: &'a str,
    /// The cgroup path (`/fogshell/<node id>/<container id>` on a served node).
    pub cgroups_path: &'a str,
    /// The terminal's size at start.
    pub size: TermSize,
}

/// Why no spec can be made.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The image's `User` names nobody in its `/etc/passwd`.
    #[error("image user {0:?} is not in the image's /etc/passwd")]
    UnknownUser(String),
    /// The image's `User` group names no group in its `/etc/group`.
    #[error("image group {0:?} is not in the image's /etc/group")]
    UnknownGroup(String),
    /// The generated spec did not parse as an OCI spec (a bug here).
    #[error("generated runtime spec is invalid: {0}")]
    Invalid(String),
}

/// The user a session runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser {
    /// Numeric user id.
    pub uid: u32,
    /// Numeric group id.
    pub gid: u32,
    /// Home directory inside the container.
    pub home: String,
}

/// Resolves an image `User` (`""`, `name`, `uid`, `name:group`, `uid:gid`…) against the
/// image's passwd and group files. No user means root.
pub fn resolve_user(
    user: Option<&str>,
    passwd: &str,
    group: &str,
) -> Result<SessionUser, BundleError> {
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .collect();
    let (user_part, group_part) = match user.unwrap_or("0").split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user.unwrap_or("0"), None),
    };
    let by_name = entries.iter().find(|f| f[0] == user_part);
    let (uid, mut gid, home) = match (by_name, user_part.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse().unwrap_or(0),
            f[3].parse().unwrap_or(0),
            f[5].to_owned(),
        ),
        (None, Ok(uid)) => match entries.iter().find(|f| f[2].parse() == Ok(uid)) {
            Some(f) => (uid, f[3].parse().unwrap_or(0), f[5].to_owned()),
            // A numeric uid need not exist in passwd (OCI allows it); it gets `/`.
            None => (uid, uid, "/".to_owned()),
        },
        (None, Err(_)) => return Err(BundleError::UnknownUser(user_part.to_owned())),
    };
    if let Some(g) = group_part {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| BundleError::UnknownGroup(g.to_owned()))?,
        };
    }
    Ok(SessionUser { uid, gid, home })
}

/// Capabilities a root user inside keeps (Docker's default set less `NET_RAW`, `MKNOD`,
/// `SYS_CHROOT`, `SETFCAP`, `AUDIT_WRITE`, `SETPCAP`). A non-root user keeps none.
const ROOT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_NET_BIND_SERVICE",
];

/// Syscalls refused with EPERM. All exist on both x86_64 and aarch64.
pub const DENIED_SYSCALLS: &[&str] = &[
    // New namespaces and mounts: a way out of the container's view.
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    // The kernel itself.
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "bpf",
    "perf_event_open",
    "syslog",
    "acct",
    "quotactl",
    "lookup_dcookie",
    "userfaultfd",
    "fanotify_init",
    "vhangup",
    // Keyrings are not namespaced.
    "keyctl",
    "add_key",
    "request_key",
    // Other processes' memory, and file handles that bypass path checks.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "open_by_handle_at",
    "name_to_handle_at",
    // The clock is the host's.
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "move_pages",
    "mbind",
    "set_mempolicy",
];

/// CPU quota period, microseconds (the kernel default).
const CPU_PERIOD_USEC: u64 = 100_000;

/// The spec for one session container.
pub fn spec(p: &BundleParams<'_>) -> Result<Spec, BundleError> {
    let user = resolve_user(p.run.user.as_deref(), p.passwd, p.group)?;
    let is_root = user.uid == 0;
    let caps: Vec<&str> = if is_root {
        ROOT_CAPABILITIES.to_vec()
    } else {
        Vec::new()
    };
    let mut env: Vec<String> = p
        .run
        .env
        .iter()
        .filter(|e| !e.starts_with("HOME=") && !e.starts_with("TERM="))
        .cloned()
        .collect();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    env.push(format!("HOME={}", user.home));
    env.push("TERM=xterm-256color".into());
    env.push(format!("FOGSHELL_SESSION={}", p.session));
    let args = if p.run.argv.is_empty() {
        vec!["/bin/sh".to_owned(), "-l".to_owned()]
    } else {
        p.run.argv.clone()
    };
    let cwd = p.run.cwd.clone().unwrap_or_else(|| user.home.clone());
    // tmpfs pages count against the memory limit; a quarter of it each for home and /tmp.
    let tmpfs_size = (p.limits.memory_bytes / 4).max(1 << 20);
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", format!("size={tmpfs_size}")]}),
    ];
    if user.home != "/" && user.home != "/tmp" {
        mounts.push(json!({
            "destination": user.home, "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=700", format!("uid={}", user.uid), format!("gid={}", user.gid), format!("size={tmpfs_size}")]
        }));
    }
    let value: Value = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": true,
            "consoleSize": {"height": p.size.rows(), "width": p.size.cols()},
            "user": {"uid": user.uid, "gid": user.gid},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": p.rootfs, "readonly": true},
        "hostname": "fogshell",
        "mounts": mounts,
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"},
                {"type": "network"}, {"type": "cgroup"}
            ],
            "cgroupsPath": p.cgroups_path,
            "resources": {
                "devices": [{"allow": false, "access": "rwm"}],
                "memory": {"limit": p.limits.memory_bytes, "swap": p.limits.memory_bytes},
                "pids": {"limit": p.limits.pids},
                "cpu": {"quota": u64::from(p.limits.cpu_millis) * CPU_PERIOD_USEC / 1000, "period": CPU_PERIOD_USEC}
            },
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/sys/firmware", "/sys/devices/virtual/powercap"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ],
            "seccomp": {
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
                "syscalls": [
                    {"names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                    // clone3 can make namespaces and cannot be filtered by flags: ENOSYS makes
                    // libc fall back to clone.
                    {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
                ]
            }
        }
    });
    serde_json::from_value(value).map_err(|e| BundleError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nuser:x:1000:\nwheel:x:10:\n";

    #[test]
    fn users_resolve_like_the_oci_image_spec_says() {
        let r = |u| resolve_user(u, PASSWD, GROUP);
        assert_eq!(
            r(None).unwrap(),
            SessionUser {
                uid: 0,
                gid: 0,
                home: "/root".into()
            }
        );
        assert_eq!(r(Some("user")).unwrap().uid, 1000);
        assert_eq!(r(Some("1000:1000")).unwrap().home, "/home/user");
        assert_eq!(r(Some("user:wheel")).unwrap().gid, 10);
        assert_eq!(
            r(Some("4242")).unwrap(),
            SessionUser {
                uid: 4242,
                gid: 4242,
                home: "/".into()
            }
        );
        assert!(matches!(r(Some("ghost")), Err(BundleError::UnknownUser(_))));
        assert!(matches!(
            r(Some("user:ghosts")),
            Err(BundleError::UnknownGroup(_))
        ));
    }

    fn params(run: &RunConfig) -> BundleParams<'_> {
        BundleParams {
            rootfs: Path::new("/var/lib/fogshell-agent/images/rootfs/abc"),
            run,
            passwd: PASSWD,
            group: GROUP,
            limits: ResourceLimits::DEFAULT,
            session: "s-1",
            cgroups_path: "/fogshell/fs-1",
            size: TermSize::new(120, 40).unwrap(),
        }
    }

    #[test]
    fn the_spec_isolates_and_limits() {
        let run = RunConfig {
            user: Some("1000:1000".into()),
            ..Default::default()
        };
        let spec = spec(&params(&run)).unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        let ns: Vec<_> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        for want in ["pid", "mount", "uts", "ipc", "network", "cgroup"] {
            assert!(ns.contains(&want), "{want} namespace missing: {ns:?}");
        }
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(v["process"]["terminal"], true);
        assert_eq!(v["process"]["user"]["uid"], 1000);
        assert_eq!(
            v["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            0,
            "non-root keeps no capability"
        );
        let res = &v["linux"]["resources"];
        assert_eq!(res["memory"]["limit"], 512 * 1024 * 1024);
        assert_eq!(res["memory"]["swap"], 512 * 1024 * 1024);
        assert_eq!(res["pids"]["limit"], 256);
        assert_eq!(res["cpu"]["quota"], 100_000);
        assert_eq!(res["cpu"]["period"], 100_000);
        assert_eq!(v["linux"]["cgroupsPath"], "/fogshell/fs-1");
        assert_eq!(v["process"]["cwd"], "/home/user");
        let home = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/home/user")
            .expect("home mount");
        assert!(
            home["options"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o == "uid=1000")
        );
        let seccomp = &v["linux"]["seccomp"];
        assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ALLOW");
        assert!(
            seccomp["syscalls"][0]["names"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == "unshare")
        );
    }

    #[test]
    fn root_keeps_a_small_capability_set_and_env_is_the_sessions() {
        let run = RunConfig {
            env: vec![
                "PATH=/bin".into(),
                "HOME=/nowhere".into(),
                "LANG=C.UTF-8".into(),
            ],
            argv: vec!["/bin/sh".into()],
            ..Default::default()
        };
        let v = serde_json::to_value(spec(&params(&run)).unwrap()).unwrap();
        assert_eq!(
            v["process"]["capabilities"]["effective"]
                .as_array()
                .unwrap()
                .len(),
            ROOT_CAPABILITIES.len()
        );
        let env: Vec<_> = v["process"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert!(
            env.contains(&"HOME=/root")
                && env.contains(&"PATH=/bin")
                && env.contains(&"LANG=C.UTF-8")
        );
        assert!(!env.contains(&"HOME=/nowhere"));
        assert!(env.contains(&"FOGSHELL_SESSION=s-1"));
        assert_eq!(v["process"]["args"][0], "/bin/sh");
    }
}
