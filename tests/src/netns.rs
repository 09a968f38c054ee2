//! A test host in its own network namespace, joined to this one by a veth pair:
//! `198.18.0.1` here, `198.18.0.2` there (the range reserved for network testing). The link
//! can be cut and restored; the namespace and the veth are removed when this is dropped, pass
//! or fail.

use std::process::Command;

/// The address on this side of the veth.
pub const HOST_IP: &str = "198.18.0.1";
/// The address inside the namespace.
pub const NODE_IP: &str = "198.18.0.2";

/// The namespace and its link.
#[derive(Debug)]
pub struct TestNet {
    /// The namespace's name.
    pub ns: String,
    host_if: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("the `ip` command (iproute2; scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestNet {
    /// Makes the namespace and the link (needs root). Names carry this process's id, so
    /// concurrent tests do not collide; only one test at a time may use the addresses.
    pub fn create(tag: &str) -> Self {
        let id = std::process::id();
        let net = Self {
            ns: format!("fs-{tag}-{id}"),
            host_if: format!("fsh{}", id % 100_000),
        };
        let node_if = format!("fsn{}", id % 100_000);
        ip(&["netns", "add", &net.ns]);
        ip(&[
            "link",
            "add",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &node_if,
        ]);
        ip(&["link", "set", &node_if, "netns", &net.ns]);
        ip(&["addr", "add", &format!("{HOST_IP}/30"), "dev", &net.host_if]);
        ip(&["link", "set", &net.host_if, "up"]);
        ip(&[
            "-n",
            &net.ns,
            "addr",
            "add",
            &format!("{NODE_IP}/30"),
            "dev",
            &node_if,
        ]);
        ip(&["-n", &net.ns, "link", "set", &node_if, "up"]);
        ip(&["-n", &net.ns, "link", "set", "lo", "up"]);
        net
    }

    /// The `nsenter` arguments that run a program in the namespace's network and nothing
    /// else. (`ip netns exec` also mounts a fresh /sys, which hides the cgroup file systems
    /// the container runtime needs.)
    pub fn nsenter_args(&self) -> Vec<String> {
        vec![format!("--net=/var/run/netns/{}", self.ns), "--".into()]
    }

    /// Cuts the link: packets stop both ways.
    pub fn cut(&self) {
        ip(&["link", "set", &self.host_if, "down"]);
    }

    /// Restores the link.
    pub fn restore(&self) {
        ip(&["link", "set", &self.host_if, "up"]);
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, and with it the pair.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        // Usually gone with the namespace already; then there is nothing to say.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
