//! The `libcontainer` driver end to end, as root: the default image (images/build.sh) in real
//! containers with real cgroups, seccomp and namespaces. These tests fail, never skip, when
//! they are not root or the default image was not built: scripts/test.sh provides both.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{
    default_image_layout, read_until, require_root, size, type_line, wait_exit, wait_for_prompt,
};
use fogshell_agent::image::ImageStore;
use fogshell_agent::runtime::container::ContainerRuntime;
use fogshell_agent::runtime::{Runtime, RuntimeError, SessionRequest, ShimHost};
use fogshell_agent::shim::protocol::ShimRequest;
use fogshell_shared::{ImageRef, ResourceLimits, TrustTier};
use sha2::Digest as _;

struct Node {
    _state: tempfile::TempDir,
    state_dir: PathBuf,
    images: Arc<ImageStore>,
    runtime: ContainerRuntime,
}

impl Node {
    fn new() -> Self {
        require_root();
        let state = tempfile::tempdir().unwrap();
        let state_dir = state.path().to_path_buf();
        let images = Arc::new(ImageStore::new(&state_dir.join("images")).unwrap());
        let runtime = Self::runtime(&state_dir, &images);
        Self {
            _state: state,
            state_dir,
            images,
            runtime,
        }
    }

    /// A fresh runtime over the same state, as an agent restart makes.
    fn runtime(state_dir: &Path, images: &Arc<ImageStore>) -> ContainerRuntime {
        let host = ShimHost::new(
            state_dir,
            PathBuf::from(env!("CARGO_BIN_EXE_fogshell-agent")),
        )
        .unwrap();
        ContainerRuntime::new(host, Arc::clone(images), None, state_dir)
    }

    fn default_image(&self) -> ImageRef {
        let digest = self
            .images
            .import_layout(&default_image_layout(), Some("default"))
            .unwrap();
        ImageRef::pinned(None, "fogshell/default", digest).unwrap()
    }

    fn request(&self, seed: u8, limits: ResourceLimits) -> SessionRequest {
        let mut r = common::request(seed, TrustTier::Unattested);
        r.image_ref = Some(self.default_image());
        r.limits = limits;
        r
    }

    /// The process id of the session's shell (the container's init), as its shim reports it.
    async fn shell_pid(&self, request: &SessionRequest) -> i32 {
        self.runtime
            .host()
            .status(request.session_id)
            .await
            .unwrap()
            .pid
    }

    /// The session's resource use, from its cgroup.
    async fn usage(&self, request: &SessionRequest) -> fogshell_shared::wire::Usage {
        let report = self
            .runtime
            .enforce_limits(request.session_id)
            .await
            .unwrap();
        report.usage.expect("a container reports its cgroup usage")
    }

    /// Nothing of the session is left: no session directory, no libcontainer state, no
    /// cgroup, no mount.
    fn assert_nothing_left(&self, request: &SessionRequest) {
        let id = request.session_id;
        assert!(
            !self.runtime.host().session_dir(id).exists(),
            "session directory left"
        );
        assert!(
            !self.runtime.container_state_dir(id).exists(),
            "libcontainer state left"
        );
        for dir in self.runtime.cgroup_dirs(id) {
            assert!(!dir.exists(), "cgroup {} left", dir.display());
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let state = self.state_dir.display().to_string();
        assert!(
            !mounts.contains(&state),
            "a mount under {state} is left:\n{mounts}"
        );
    }
}

impl Drop for Node {
    /// A test that failed half-way leaves nothing running on the developer's machine:
    /// killing each shell (the container's init) ends its pid namespace, and its shim then
    /// deletes the container and its cgroups as for any exit.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let kill = |pid: i32| {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        };
        let Ok(sessions) = std::fs::read_dir(self.state_dir.join("sessions")) else {
            return;
        };
        for session in sessions.flatten() {
            let pid = std::fs::read_to_string(session.path().join("shell.pid"))
                .ok()
                .and_then(|pid| pid.trim().parse().ok());
            if let Some(pid) = pid {
                kill(pid);
            }
        }
        // Time for the shims to delete what they ran; then the shims and the zygote, which
        // would otherwise wait for an agent that is not coming back.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let state = self.state_dir.to_string_lossy().into_owned();
        for process in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = process.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(process.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&state) {
                kill(pid);
            }
        }
    }
}

#[tokio::test]
async fn a_shell_in_a_container_is_isolated() {
    let node = Node::new();
    let req = node.request(1, ResourceLimits::DEFAULT);
    node.runtime.allocate(&req).await.unwrap();
    let mut pty = node
        .runtime
        .attach_pty(req.session_id, size(100, 30), 0)
        .await
        .unwrap();

    type_line(&mut pty, "echo hi-$((6*7))").await;
    read_until(&mut pty, "hi-42").await;

    // A non-root user, as the image asks.
    type_line(&mut pty, "echo uid=$(id -u)").await;
    read_until(&mut pty, "uid=1000").await;

    // Only the container's own processes: its shell and the few commands it runs.
    let pids: u32 = query(&mut pty, "pids", "ls /proc | grep -c '^[0-9]'")
        .await
        .parse()
        .unwrap();
    assert!(
        pids < 8,
        "the container sees {pids} processes: host processes leak in"
    );

    // Signals start at their defaults, whatever the agent inherited (this test binary, like
    // every Rust program, ignores SIGPIPE): Ctrl-C and closed pipes stop programs.
    let masks = query(
        &mut pty,
        "signals",
        "grep -E '^Sig(Ign|Blk)' /proc/self/status | tr -d '\\t'",
    )
    .await;
    for mask in masks.split_whitespace() {
        let (name, hex) = mask.split_once(':').expect("Name:hex");
        let bits = u64::from_str_radix(hex, 16).expect("a hex mask");
        // The standard signals (1–31); glibc keeps two real-time signals for itself.
        assert_eq!(bits & 0x7fff_ffff, 0, "{name} is {hex} in the container");
    }

    // No host files: the root is the image, read-only; home and /tmp are writable.
    let marker = format!("fogshell-host-marker-{}", std::process::id());
    std::fs::write(std::env::temp_dir().join(&marker), "host").unwrap();
    let out = query(&mut pty, "hostfile", &format!("ls /tmp/{marker} 2>&1")).await;
    assert!(
        out.contains("No such file"),
        "a host file is visible: {out:?}"
    );
    std::fs::remove_file(std::env::temp_dir().join(&marker)).unwrap();
    type_line(
        &mut pty,
        "touch /bin/x 2>/dev/null; echo \"root\"\"fs=$?\"; touch ~/f /tmp/f && echo \"writ\"\"able=yes\"",
    )
    .await;
    // One read: both answers may arrive in one chunk. (The quotes keep the echoed command
    // line from matching.)
    let out = read_until(&mut pty, "writable=yes").await;
    assert!(
        out.contains("rootfs=1"),
        "the image root is writable: {out:?}"
    );

    // Seccomp really filters: a new user namespace needs no capability, only seccomp stops it.
    let out = query(&mut pty, "unshare", "unshare -U true 2>&1; echo $?").await;
    assert!(
        out.contains("Operation not permitted") && out.ends_with('1'),
        "{out:?}"
    );

    // The terminal follows resizes.
    type_line(&mut pty, "stty size").await;
    read_until(&mut pty, "30 100").await;
    pty.input
        .send(&ShimRequest::Resize(size(132, 43)))
        .await
        .unwrap();
    type_line(&mut pty, "stty size").await;
    read_until(&mut pty, "43 132").await;

    type_line(&mut pty, "exit 7").await;
    assert_eq!(wait_exit(&mut pty).await, 7);
    node.runtime.terminate(req.session_id).await.unwrap();
    node.assert_nothing_left(&req);
}

/// Runs `command` in the shell and returns its output (joined on one line): typed as
/// `echo "KEY""=$(command)"`, so the echoed input never contains `KEY=` and only the answer
/// matches.
async fn query(pty: &mut fogshell_agent::runtime::PtyStreams, key: &str, command: &str) -> String {
    type_line(
        pty,
        &format!("echo \"{key}\"\"=$({command})\" | tr '\\n' ' '; echo \"<end\"\">\""),
    )
    .await;
    let seen = read_until(pty, "<end>").await;
    let start = seen.rfind(&format!("{key}=")).expect("the answer") + key.len() + 1;
    let end = seen.rfind("<end>").unwrap();
    seen[start..end].trim().to_owned()
}

#[tokio::test]
async fn limits_hold_and_read_back() {
    let node = Node::new();
    let limits = ResourceLimits {
        cpu_millis: 500,
        memory_bytes: 64 << 20,
        pids: 32,
    };
    let req = node.request(2, limits);
    node.runtime.allocate(&req).await.unwrap();

    let report = node.runtime.enforce_limits(req.session_id).await.unwrap();
    assert!(report.is_ok(), "limits differ: {:?}", report.mismatches);
    assert_eq!(report.applied, limits);
    let usage = report.usage.expect("cgroup usage");
    assert!(usage.pids >= 1 && usage.memory_bytes > 0, "{usage:?}");

    let mut pty = node
        .runtime
        .attach_pty(req.session_id, size(80, 24), 0)
        .await
        .unwrap();
    // A 100 MiB buffer under a 64 MiB limit: the kernel kills dd (SIGKILL = 137), the shell lives.
    type_line(
        &mut pty,
        "dd if=/dev/zero of=/dev/null bs=100M count=1 2>/dev/null; echo oom=$?",
    )
    .await;
    read_until(&mut pty, "oom=137").await;
    let usage = node.usage(&req).await;
    assert_eq!(usage.oom_kills, 1, "the OOM kill is reported");

    // A fork bomb stops at the pids limit.
    type_line(
        &mut pty,
        "i=0; while [ $i -lt 64 ]; do sleep 60 & i=$((i+1)); done",
    )
    .await;
    read_until(&mut pty, "can't fork").await;
    let usage = node.usage(&req).await;
    assert!(
        usage.pids <= 32,
        "pids limit broken: {} processes",
        usage.pids
    );
    assert!(
        usage.pids >= 16,
        "the bomb never ran: {} processes",
        usage.pids
    );

    // Terminate kills all of them and leaves nothing.
    node.runtime.terminate(req.session_id).await.unwrap();
    node.assert_nothing_left(&req);
}

#[tokio::test]
async fn a_container_outlives_an_agent_restart() {
    let node = Node::new();
    let req = node.request(3, ResourceLimits::DEFAULT);
    node.runtime.allocate(&req).await.unwrap();
    let mut pty = node
        .runtime
        .attach_pty(req.session_id, size(80, 24), 0)
        .await
        .unwrap();
    wait_for_prompt(&mut pty).await;
    type_line(&mut pty, "MARK=kept-$((2*5)); echo \"mark\"\"ed\"").await;
    read_until(&mut pty, "marked").await;
    drop(pty);

    let restarted = Node::runtime(&node.state_dir, &node.images);
    let running = restarted.list().await.unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].session_id, req.session_id);
    let mut pty = restarted
        .attach_pty(req.session_id, size(80, 24), 0)
        .await
        .unwrap();
    type_line(&mut pty, "echo $MARK").await;
    read_until(&mut pty, "kept-10").await;
    restarted.terminate(req.session_id).await.unwrap();
    node.assert_nothing_left(&req);
}

#[tokio::test]
async fn unpinned_unsafe_and_networked_requests_are_refused() {
    let node = Node::new();

    let mut tagged = node.request(4, ResourceLimits::DEFAULT);
    tagged.image_ref = Some("busybox:latest".parse().unwrap());
    let err = node.runtime.allocate(&tagged).await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Refused(m) if m.contains("pinned by digest")),
        "{err}"
    );

    let mut networked = node.request(5, ResourceLimits::DEFAULT);
    networked.network = true;
    assert!(matches!(
        node.runtime.allocate(&networked).await,
        Err(RuntimeError::Refused(_))
    ));

    // An image whose layer climbs out of its root is refused before anything runs.
    let layout = tempfile::tempdir().unwrap();
    let digest = write_layout_with_layer(layout.path(), hostile_layer());
    node.images.import_layout(layout.path(), None).unwrap();
    let mut hostile = node.request(6, ResourceLimits::DEFAULT);
    hostile.image_ref = Some(ImageRef::pinned(None, "evil/escape", digest).unwrap());
    let err = node.runtime.allocate(&hostile).await.unwrap_err();
    assert!(
        err.to_string().contains("escapes the root filesystem"),
        "{err}"
    );
    assert!(!node.runtime.host().session_dir(hostile.session_id).exists());
    assert!(node.runtime.list().await.unwrap().is_empty());
}

/// A plain tar whose one entry is `../../escaped`, with its raw name.
fn hostile_layer() -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(4);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    let name = b"../../escaped";
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, &b"evil"[..]).unwrap();
    builder.into_inner().unwrap()
}

/// Writes an OCI layout holding one image with `layer` (an uncompressed tar) as its only
/// layer; returns the manifest digest.
fn write_layout_with_layer(dir: &Path, layer: Vec<u8>) -> fogshell_shared::Digest {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let hex = hex::encode(sha2::Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let (layer_digest, layer_size) = put(&layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "config": {"Cmd": ["/bin/sh"]}
    });
    let (config_digest, config_size) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}]
    });
    let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size}]
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    manifest_digest.parse().unwrap()
}

#[tokio::test]
async fn a_container_whose_shim_died_is_reaped() {
    let node = Node::new();
    let req = node.request(7, ResourceLimits::DEFAULT);
    node.runtime.allocate(&req).await.unwrap();
    // The container's init becomes a process that ignores the terminal's hangup, so it surely
    // outlives the shim and its PTY master. (A background `nohup` child would not: the shell,
    // the pid namespace's init, exits on the hangup and the kernel then kills the namespace.)
    let mut pty = node
        .runtime
        .attach_pty(req.session_id, size(80, 24), 0)
        .await
        .unwrap();
    type_line(
        &mut pty,
        "trap '' HUP; echo \"start\"\"ed\"; exec sleep 1000 >/dev/null 2>&1",
    )
    .await;
    read_until(&mut pty, "started").await;
    drop(pty);
    let init = node.shell_pid(&req).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{init}/comm"))
        .unwrap()
        .trim()
        != "sleep"
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the shell never became sleep"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let shim = common::parent_pid(init);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    common::wait_gone(shim).await;
    assert!(node.runtime.container_state_dir(req.session_id).exists());
    let procs = node.runtime.cgroup_dirs(req.session_id)[0].join("cgroup.procs");
    let left = std::fs::read_to_string(&procs).unwrap();
    assert!(
        !left.trim().is_empty(),
        "the container's init should still run"
    );
    assert!(
        node.runtime.list().await.unwrap().is_empty(),
        "a session without a shim is not running"
    );

    let reaped = node.runtime.host().reap_dead().await.unwrap();
    assert_eq!(reaped, vec![req.session_id]);
    // Its cgroups are gone, which the kernel allows only once no process is left in them.
    node.assert_nothing_left(&req);
}

/// Someone removed the session's directory (by hand, or with the agent's state): no agent can
/// reach the shim again, so the shim ends the shell and deletes the container itself.
#[tokio::test]
async fn a_container_whose_session_directory_was_removed_is_ended() {
    let node = Node::new();
    let req = node.request(8, ResourceLimits::DEFAULT);
    node.runtime.allocate(&req).await.unwrap();
    let init = node.shell_pid(&req).await;
    let shim = common::parent_pid(init);
    assert!(node.runtime.container_state_dir(req.session_id).exists());
    std::fs::remove_dir_all(node.runtime.host().session_dir(req.session_id)).unwrap();
    common::wait_gone(init).await;
    common::wait_gone(shim).await;
    node.assert_nothing_left(&req);
}

fn with_registry(
    node: &Node,
    registry: &fogshell_e2e::registry::LocalRegistry,
) -> ContainerRuntime {
    let host = ShimHost::new(
        &node.state_dir,
        PathBuf::from(env!("CARGO_BIN_EXE_fogshell-agent")),
    )
    .unwrap();
    let client = fogshell_agent::image::registry::RegistryClient::new(
        &fogshell_agent::image::registry::RegistryConfig {
            insecure: vec![registry.addr.clone()],
            ..Default::default()
        },
    );
    ContainerRuntime::new(
        host,
        Arc::clone(&node.images),
        Some(client),
        &node.state_dir,
    )
}

fn default_digest() -> fogshell_shared::Digest {
    std::fs::read_to_string(default_image_layout().join("digest"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn images_are_pulled_by_digest_once_for_concurrent_sessions() {
    let node = Node::new();
    let registry = fogshell_e2e::registry::LocalRegistry::start();
    registry.push_layout(&default_image_layout(), "default", "fogshell/default");
    let runtime = with_registry(&node, &registry);
    let image: ImageRef = format!("{}/fogshell/default@{}", registry.addr, default_digest())
        .parse()
        .unwrap();

    let mut a = common::request(8, TrustTier::Unattested);
    a.image_ref = Some(image.clone());
    let mut b = common::request(9, TrustTier::Unattested);
    b.image_ref = Some(image.clone());
    let (ra, rb) = tokio::join!(runtime.allocate(&a), runtime.allocate(&b));
    ra.unwrap();
    rb.unwrap();

    let manifest = node.images.manifest(&default_digest()).unwrap();
    let layer = manifest.layers()[0].digest().to_string();
    assert_eq!(
        registry.gets(&format!("/blobs/{layer}")),
        1,
        "the layer was pulled more than once"
    );

    let mut pty = runtime
        .attach_pty(b.session_id, size(80, 24), 0)
        .await
        .unwrap();
    type_line(&mut pty, "echo pulled-$((40+2))").await;
    read_until(&mut pty, "pulled-42").await;
    for r in [&a, &b] {
        runtime.terminate(r.session_id).await.unwrap();
        node.assert_nothing_left(r);
    }
}

#[tokio::test]
async fn a_tampered_blob_is_refused() {
    let node = Node::new();
    let registry = fogshell_e2e::registry::LocalRegistry::start();
    registry.push_layout(&default_image_layout(), "default", "fogshell/default");
    // Overwrite the layer in the registry's storage: it now serves other bytes under its digest.
    let manifest_bytes = std::fs::read(
        default_image_layout()
            .join("blobs/sha256")
            .join(default_digest().hex()),
    )
    .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let layer_hex = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let data = registry.storage.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{layer_hex}/data",
        &layer_hex[..2]
    ));
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let runtime = with_registry(&node, &registry);
    let mut req = common::request(10, TrustTier::Unattested);
    req.image_ref = Some(
        format!("{}/fogshell/default@{}", registry.addr, default_digest())
            .parse()
            .unwrap(),
    );
    let err = runtime.allocate(&req).await.unwrap_err().to_string();
    assert!(
        err.contains(&layer_hex) && (err.contains("digest") || err.contains("Digest")),
        "{err}"
    );
    assert!(
        !node
            .images
            .has_blob(&format!("sha256:{layer_hex}").parse().unwrap()),
        "a bad blob was kept"
    );
    assert!(runtime.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_command_runs_instead_of_the_shell_and_its_status_comes_back() {
    let node = Node::new();
    let mut req = node.request(11, ResourceLimits::DEFAULT);
    req.command = Some(vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo from-$((3*3)); exit 3".into(),
    ]);
    node.runtime.allocate(&req).await.unwrap();
    // Attaching after the command may already have exited still replays its output and status.
    let mut pty = node
        .runtime
        .attach_pty(req.session_id, size(80, 24), 0)
        .await
        .unwrap();
    read_until(&mut pty, "from-9").await;
    assert_eq!(wait_exit(&mut pty).await, 3);
    node.runtime.terminate(req.session_id).await.unwrap();
    node.assert_nothing_left(&req);
}

/// Sessions' shims are forked by the zygote: no exec on a start's path. Each session's shell
/// descends from it, and one zygote serves session after session.
#[tokio::test]
async fn sessions_are_forked_by_the_shim_zygote() {
    let node = Node::new();
    node.runtime.host().prepare_zygote();
    let zygote = node.runtime.host().zygote_pid().expect("a zygote runs");
    let zygote = i32::try_from(zygote).unwrap();
    for seed in [7, 8] {
        let req = node.request(seed, ResourceLimits::DEFAULT);
        node.runtime.allocate(&req).await.unwrap();
        let shell = node.shell_pid(&req).await;
        // The container's init is the shim's child (libcontainer clones it as a sibling of
        // its intermediate process); the shim is the zygote's.
        let mut pid = common::parent_pid(shell);
        let mut ancestors = vec![pid];
        while pid > 1 && pid != zygote {
            pid = common::parent_pid(pid);
            ancestors.push(pid);
        }
        assert_eq!(
            pid, zygote,
            "the shell's ancestors {ancestors:?} miss the zygote"
        );
        assert_eq!(ancestors.len(), 2, "shell → shim → zygote: {ancestors:?}");
        let comm = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert_eq!(comm(ancestors[0]).trim(), "fogshell-shim");
        assert_eq!(comm(zygote).trim(), "fogshell-agent");
        // The shell works: its terminal answers.
        let mut pty = node
            .runtime
            .attach_pty(req.session_id, common::size(80, 24), 0)
            .await
            .unwrap();
        common::wait_for_prompt(&mut pty).await;
        common::type_line(&mut pty, "echo fo''rked").await;
        common::read_until(&mut pty, "forked").await;
        node.runtime.terminate(req.session_id).await.unwrap();
        node.assert_nothing_left(&req);
        assert_eq!(
            node.runtime.host().zygote_pid(),
            Some(zygote as u32),
            "the same zygote serves the next session"
        );
    }
}
