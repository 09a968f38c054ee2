//! The `process` driver end to end: real shims (the agent binary in shim mode), real PTYs,
//! real shells. Needs no root.

mod common;

use std::path::PathBuf;

use common::{read_until, size, type_line, wait_exit};
use fogshell_agent::runtime::process::ProcessRuntime;
use fogshell_agent::runtime::{Runtime, RuntimeError, SessionRequest, ShimHost};
use fogshell_agent::shim::protocol::ShimRequest;
use fogshell_shared::TrustTier;

fn request(seed: u8) -> SessionRequest {
    common::request(seed, TrustTier::Dev)
}

fn runtime(state: &std::path::Path) -> ProcessRuntime {
    let host = ShimHost::new(state, PathBuf::from(env!("CARGO_BIN_EXE_fogshell-agent"))).unwrap();
    // A plain sh with a fixed prompt keeps the output predictable.
    ProcessRuntime::new(host, vec!["/bin/sh".into()])
}

#[tokio::test]
async fn type_read_resize_and_exit_code() {
    let state = tempfile::tempdir().unwrap();
    let rt = runtime(state.path());
    let req = request(1);
    let runtime_ref = rt.allocate(&req).await.unwrap();
    assert_eq!(runtime_ref.driver, fogshell_shared::RuntimeDriver::Process);

    let mut pty = rt
        .attach_pty(req.session_id, size(100, 30), 0)
        .await
        .unwrap();
    type_line(&mut pty, "echo hi-$((6*7))").await;
    read_until(&mut pty, "hi-42").await;

    type_line(&mut pty, "stty size").await;
    read_until(&mut pty, "30 100").await;
    pty.input
        .send(&ShimRequest::Resize(size(132, 43)))
        .await
        .unwrap();
    type_line(&mut pty, "stty size").await;
    read_until(&mut pty, "43 132").await;

    // The shell's environment is the session's, not the agent's.
    type_line(
        &mut pty,
        "echo session=$FOGSHELL_SESSION cargo=${CARGO_PKG_NAME:-none}",
    )
    .await;
    read_until(&mut pty, &format!("session={} cargo=none", req.session_id)).await;

    type_line(&mut pty, "exit 7").await;
    assert_eq!(wait_exit(&mut pty).await, 7);

    rt.terminate(req.session_id).await.unwrap();
    assert!(
        !rt.host_dir(req.session_id).exists(),
        "terminate leaves nothing behind"
    );
    assert!(matches!(
        rt.terminate(req.session_id).await,
        Err(RuntimeError::NoSuchSession(_))
    ));
}

#[tokio::test]
async fn a_reattaching_viewer_gets_exactly_what_it_missed() {
    let state = tempfile::tempdir().unwrap();
    let rt = runtime(state.path());
    let req = request(2);
    rt.allocate(&req).await.unwrap();

    let mut first = rt
        .attach_pty(req.session_id, size(80, 24), 0)
        .await
        .unwrap();
    type_line(&mut first, "echo one-$((1+1))").await;
    let before = read_until(&mut first, "one-2").await;
    drop(first);

    // While nobody watches, the shell keeps writing into the ring.
    let mut second = rt
        .attach_pty(req.session_id, size(80, 24), 0)
        .await
        .unwrap();
    assert_eq!(second.from_offset, 0);
    let replay = read_until(&mut second, "one-2").await;
    assert!(replay.starts_with(&before), "{replay:?} vs {before:?}");

    // Asking from the end replays nothing old.
    let status = rt.host().status(req.session_id).await.unwrap();
    drop(second);
    let mut third = rt
        .attach_pty(req.session_id, size(80, 24), status.output_end)
        .await
        .unwrap();
    assert_eq!(third.from_offset, status.output_end);
    type_line(&mut third, "echo three-$((1+2))").await;
    let fresh = read_until(&mut third, "three-3").await;
    assert!(!fresh.contains("one-2"), "{fresh:?}");

    rt.terminate(req.session_id).await.unwrap();
}

#[tokio::test]
async fn sessions_outlive_an_agent_restart() {
    let state = tempfile::tempdir().unwrap();
    let req = request(3);
    {
        let rt = runtime(state.path());
        rt.allocate(&req).await.unwrap();
        let mut pty = rt
            .attach_pty(req.session_id, size(80, 24), 0)
            .await
            .unwrap();
        type_line(&mut pty, "MARK=kept-$((2*5)); echo \"mark\"\"ed\"").await;
        // The shell ran the line before the agent goes: input still in flight when it dies
        // may otherwise land after what the next connection types.
        read_until(&mut pty, "marked").await;
        // The "agent" goes away here: the runtime and its connections are dropped.
    }
    let rt = runtime(state.path());
    let running = rt.list().await.unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].session_id, req.session_id);
    let mut pty = rt
        .attach_pty(req.session_id, size(80, 24), 0)
        .await
        .unwrap();
    type_line(&mut pty, "echo $MARK").await;
    read_until(&mut pty, "kept-10").await;
    rt.terminate(req.session_id).await.unwrap();
    assert!(rt.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn terminate_kills_a_running_shell() {
    let state = tempfile::tempdir().unwrap();
    let rt = runtime(state.path());
    let req = request(4);
    rt.allocate(&req).await.unwrap();
    let pid = rt.host().status(req.session_id).await.unwrap().pid;
    rt.terminate(req.session_id).await.unwrap();
    // The shim reaped it: no such process, not even a zombie.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(rt.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn limits_are_reported_unenforced_and_other_tiers_refused() {
    let state = tempfile::tempdir().unwrap();
    let rt = runtime(state.path());
    let req = request(5);
    rt.allocate(&req).await.unwrap();
    let report = rt.enforce_limits(req.session_id).await.unwrap();
    assert!(
        !report.is_ok(),
        "the process driver enforces nothing and must say so"
    );
    assert_eq!(report.mismatches.len(), 3);
    assert!(report.usage.is_none());
    assert!(matches!(
        rt.allocate(&req).await,
        Err(RuntimeError::AlreadyRunning(_))
    ));
    rt.terminate(req.session_id).await.unwrap();

    let mut attested = request(6);
    attested.trust_tier = TrustTier::Unattested;
    assert!(matches!(
        rt.allocate(&attested).await,
        Err(RuntimeError::Refused(_))
    ));
    assert!(matches!(
        rt.enforce_limits(attested.session_id).await,
        Err(RuntimeError::NoSuchSession(_))
    ));
}

/// Starts session `seed` on `rt`; returns its request, its shell's pid and its shim's.
async fn started(rt: &ProcessRuntime, seed: u8) -> (SessionRequest, i32, i32) {
    let req = request(seed);
    rt.allocate(&req).await.unwrap();
    let shell = rt.host().status(req.session_id).await.unwrap().pid;
    let shim = common::parent_pid(shell);
    (req, shell, shim)
}

#[tokio::test]
async fn a_shell_whose_shim_died_is_reaped() {
    let state = tempfile::tempdir().unwrap();
    let rt = runtime(state.path());
    let (req, shell, shim) = started(&rt, 7).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    common::wait_gone(shim).await;
    assert_eq!(rt.host().reap_dead().await.unwrap(), vec![req.session_id]);
    common::wait_gone(shell).await;
    assert!(!rt.host_dir(req.session_id).exists());
    // Reaping again finds nothing.
    assert!(rt.host().reap_dead().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_shell_whose_session_directory_was_removed_is_ended() {
    let state = tempfile::tempdir().unwrap();
    let rt = runtime(state.path());
    let (req, shell, shim) = started(&rt, 8).await;
    std::fs::remove_dir_all(rt.host_dir(req.session_id)).unwrap();
    // No agent can reach the shim again: it ends the shell and itself.
    common::wait_gone(shell).await;
    common::wait_gone(shim).await;
    assert!(rt.host().reap_dead().await.unwrap().is_empty());
}
