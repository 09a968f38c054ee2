//! Test hosts in network namespaces, with addresses from 198.18.0.0/15 (the range reserved for
//! network testing), removed when dropped, pass or fail:
//!
//! - [`TestNet`]: one host joined to this namespace by a veth pair, `198.18.0.1` here and
//!   `198.18.0.2` there, whose link can be cut and restored;
//! - [`Bridge`] and [`FogHost`]: a fog topology, a bridge at `198.18.1.1` here and any number
//!   of hosts on it at `198.18.1.11`, `.12`, ….

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
    /// The host's address.
    pub ip: String,
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

/// `nsenter` arguments that run a program in namespace `ns`'s network and nothing else. (`ip
/// netns exec` also mounts a fresh /sys, which hides the cgroup file systems the container
/// runtime needs.)
fn nsenter_into(ns: &str) -> Vec<String> {
    vec![format!("--net=/var/run/netns/{ns}"), "--".into()]
}

/// Removes a namespace and the veth end left on this side (usually gone with it already).
fn remove(ns: &str, host_if: &str) {
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
    let _ = Command::new("ip")
        .args(["link", "del", host_if])
        .stderr(std::process::Stdio::null())
        .status();
}

impl TestNet {
    /// Makes the namespace and the link (needs root). Names carry this process's id, so
    /// concurrent tests do not collide; only one test at a time may use the addresses.
    pub fn create(tag: &str) -> Self {
        let id = std::process::id();
        let net = Self {
            ns: format!("fs-{tag}-{id}"),
            host_if: format!("fsh{}", id % 100_000),
            ip: NODE_IP.into(),
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

    /// The `nsenter` arguments that run a program in the namespace's network.
    pub fn nsenter_args(&self) -> Vec<String> {
        nsenter_into(&self.ns)
    }

    /// Cuts the link (off this namespace or off the bridge): packets stop both ways.
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
        remove(&self.ns, &self.host_if);
    }
}

/// The test bed's bridge address, on this side: nodes in [`FogHost`] namespaces reach the
/// coordinator (or the relays in front of it) here.
pub const BRIDGE_IP: &str = "198.18.1.1";

/// A bridge in this namespace joining any number of [`FogHost`]s: a fog topology on one
/// machine. Removed, with every host on it, when dropped.
#[derive(Debug)]
pub struct Bridge {
    name: String,
    tag: String,
    hosts: std::sync::atomic::AtomicU8,
}

impl Bridge {
    /// Makes the bridge, `198.18.1.1/24` (needs root).
    pub fn create(tag: &str) -> Self {
        let id = std::process::id() % 100_000;
        let bridge = Self {
            name: format!("fsb{id}"),
            tag: format!("{tag}-{id}"),
            hosts: std::sync::atomic::AtomicU8::new(0),
        };
        ip(&["link", "add", &bridge.name, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{BRIDGE_IP}/24"),
            "dev",
            &bridge.name,
        ]);
        ip(&["link", "set", &bridge.name, "up"]);
        bridge
    }

    /// A new host on the bridge, in a namespace of its own, at `198.18.1.(10 + n)`.
    pub fn add_host(&self) -> FogHost {
        let n = self
            .hosts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        assert!(n < 200, "too many hosts on one bridge");
        let host = FogHost {
            ns: format!("fs-{}-{n}", self.tag),
            host_if: format!("{}h{n}", self.name),
            ip: format!("198.18.1.{}", 10 + u16::from(n)),
        };
        let node_if = format!("{}n{n}", self.name);
        ip(&["netns", "add", &host.ns]);
        ip(&[
            "link",
            "add",
            &host.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &node_if,
        ]);
        ip(&["link", "set", &host.host_if, "master", &self.name]);
        ip(&["link", "set", &host.host_if, "up"]);
        ip(&["link", "set", &node_if, "netns", &host.ns]);
        ip(&[
            "-n",
            &host.ns,
            "addr",
            "add",
            &format!("{}/24", host.ip),
            "dev",
            &node_if,
        ]);
        ip(&["-n", &host.ns, "link", "set", &node_if, "up"]);
        ip(&["-n", &host.ns, "link", "set", "lo", "up"]);
        host
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A host of a [`Bridge`]: the same as a [`TestNet`], its veth on the bridge.
pub type FogHost = TestNet;
