//! `fogshell-agent run`, the operator's smoke test (like `ctr run -t`), as an operator runs
//! it: the real binary, a shell in a container of the default image, no coordinator. Input
//! comes from a pipe here; the shell's exit status becomes the command's, and the session is
//! gone afterwards. Needs root, as containers do.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{default_image_layout, require_root};
use fogshell_e2e::registry::LocalRegistry;

/// Runs `fogshell-agent run` with `args` on `state_dir`, typing `input`.
fn run(state_dir: &Path, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fogshell-agent"))
        .arg("run")
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        // Not the developer's: a login must come from the arguments.
        .env_remove("REGISTRY_AUTH_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fogshell-agent runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Nothing of the session is left: no session directory, no container state.
fn assert_nothing_left(state_dir: &Path) {
    for dir in ["sessions", "containers"] {
        let left: Vec<_> = std::fs::read_dir(state_dir.join(dir))
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left in {dir}: {left:?}");
    }
}

#[test]
fn a_shell_runs_in_this_terminal_and_its_status_is_the_commands() {
    require_root();
    let state = tempfile::tempdir().unwrap();
    let layout = default_image_layout();
    let output = run(
        state.path(),
        &["--image-layout", layout.to_str().unwrap()],
        "echo smoke-$((6*7)) $(id -u); exit 3\n",
    );
    let said = text(&output);
    assert_eq!(output.status.code(), Some(3), "{said}");
    assert!(said.contains("smoke-42"), "{said}");
    assert!(
        !said.contains("smoke-42 0"),
        "the shell ran as root: {said}"
    );
    assert_nothing_left(state.path());
}

/// An image from a registry that demands a login: refused without it, with a message saying
/// where a login goes; pulled and run with `--registry-auth-file`.
#[test]
fn an_image_is_pulled_from_a_private_registry_with_a_login() {
    require_root();
    let registry = LocalRegistry::start_with_login();
    let layout = default_image_layout();
    registry.push_layout(&layout, "default", "fogshell/default");
    let digest = std::fs::read_to_string(layout.join("digest")).unwrap();
    let image = format!("{}/fogshell/default@{}", registry.addr, digest.trim());
    let state = tempfile::tempdir().unwrap();
    let auth_file = registry.auth_file(state.path());
    let insecure = ["--insecure-registry", &registry.addr, "--image", &image];

    let refused = run(state.path(), &insecure, "exit 0\n");
    let said = text(&refused);
    assert!(!refused.status.success(), "{said}");
    assert!(said.contains("registry auth file"), "{said}");

    let mut with_login = insecure.to_vec();
    with_login.extend(["--registry-auth-file", auth_file.to_str().unwrap()]);
    let output = run(state.path(), &with_login, "echo pulled-$((40+2)); exit 0\n");
    let said = text(&output);
    assert_eq!(output.status.code(), Some(0), "{said}");
    assert!(said.contains("pulled-42"), "{said}");
    assert_nothing_left(state.path());
}
