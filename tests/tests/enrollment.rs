//! Enrollment end to end with the real binaries: a coordinator serving QUIC on loopback, join
//! tokens from its CLI, and `fogshell-agent join` pinning the CA.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use fogshell_e2e::{binary, run};

/// `fogshell-coordinator serve` on a loopback port, stopped when dropped.
struct Coordinator {
    child: Child,
    addr: String,
}

impl Coordinator {
    fn start(data: &Path) -> Self {
        let mut child = Command::new(binary("fogshell-coordinator"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(fogshell_e2e::FABRIC_ONLY_SERVE_ARGS)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the coordinator starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Self { child, addr }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn value(output: &std::process::Output, name: &str) -> String {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {name:?} in {output:?}"))
}

fn join(
    coordinator: &Coordinator,
    token: &str,
    ca_hash: &str,
    node: &str,
    state: &Path,
) -> std::process::Output {
    run(
        "fogshell-agent",
        &[
            "join",
            "--coordinator",
            &coordinator.addr,
            "--token",
            token,
            "--ca-hash",
            ca_hash,
            "--node-id",
            node,
            "--state-dir",
            state.to_str().unwrap(),
        ],
    )
}

#[test]
fn a_node_joins_once_with_a_pinned_ca_and_bad_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("coordinator");
    let data_arg = data.to_str().unwrap();
    let init = run("fogshell-coordinator", &["init", "--data-dir", data_arg]);
    let ca_hash = value(&init, "ca hash:");
    let token = value(
        &run(
            "fogshell-coordinator",
            &["join-token", "create", "--data-dir", data_arg],
        ),
        "token:",
    );
    let coordinator = Coordinator::start(&data);

    // A coordinator that is not the pinned one never sees the token: the handshake fails,
    // and the token still works afterwards.
    let impostor_hash = format!("sha256:{}", "0".repeat(64));
    let out = join(
        &coordinator,
        &token,
        &impostor_hash,
        "fog-a",
        &dir.path().join("a0"),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match the pinned"),
        "{out:?}"
    );

    let state = dir.path().join("a");
    let out = join(&coordinator, &token, &ca_hash, "fog-a", &state);
    assert!(out.status.success(), "{out:?}");
    let identity = state.join("identity");
    let mode = |name: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(identity.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("node.key"), 0o600);
    let cert_pem = std::fs::read_to_string(identity.join("node.crt")).unwrap();
    let der = pem::parse(cert_pem).unwrap().into_contents();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        format!("{:?}", san.value.general_names),
        r#"[DNSName("fog-a")]"#
    );

    // The same token again, and a forged one, are refused.
    let again = join(
        &coordinator,
        &token,
        &ca_hash,
        "fog-b",
        &dir.path().join("b"),
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("join.token_reused"),
        "{again:?}"
    );
    let (id, _) = token.split_once('.').unwrap();
    let forged = format!("{id}.{}", "x".repeat(24));
    let out = join(
        &coordinator,
        &forged,
        &ca_hash,
        "fog-c",
        &dir.path().join("c"),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("join.token_forged"),
        "{out:?}"
    );
    assert!(!dir.path().join("b/identity/node.crt").exists());

    // A node that has joined does not join twice.
    let fresh = value(
        &run(
            "fogshell-coordinator",
            &["join-token", "create", "--data-dir", data_arg],
        ),
        "token:",
    );
    let out = join(&coordinator, &fresh, &ca_hash, "fog-a", &state);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already has an identity"),
        "{out:?}"
    );
}
