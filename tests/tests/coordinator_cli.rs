//! The coordinator's operator commands, through the real binary: `init` makes the CA once,
//! `join-token create` mints a token shown once, `join-token list` shows state, never secrets.

use fogshell_e2e::run;

fn field<'a>(output: &'a str, name: &str) -> &'a str {
    output
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name:?} in {output}"))
}

#[test]
fn init_makes_the_ca_once_and_tokens_are_minted_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();

    let first = run("fogshell-coordinator", &["init", "--data-dir", data_arg]);
    assert!(first.status.success(), "{first:?}");
    let first = String::from_utf8(first.stdout).unwrap();
    let hash = field(&first, "ca hash:").to_owned();
    assert!(hash.starts_with("sha256:") && hash.len() == 71, "{hash}");

    let second = run("fogshell-coordinator", &["init", "--data-dir", data_arg]);
    let second = String::from_utf8(second.stdout).unwrap();
    assert_eq!(
        field(&second, "ca hash:"),
        hash,
        "init must keep the CA it made"
    );

    let created = run(
        "fogshell-coordinator",
        &[
            "join-token",
            "create",
            "--data-dir",
            data_arg,
            "--ttl",
            "30m",
            "--description",
            "fog-a",
        ],
    );
    assert!(created.status.success(), "{created:?}");
    let created = String::from_utf8(created.stdout).unwrap();
    let token = field(&created, "token:").to_owned();
    assert_eq!(field(&created, "ca hash:"), hash);
    let (id, secret) = token.split_once('.').unwrap();

    let listed = run(
        "fogshell-coordinator",
        &["join-token", "list", "--data-dir", data_arg],
    );
    let listed = String::from_utf8(listed.stdout).unwrap();
    let line = listed
        .lines()
        .find(|l| l.starts_with(id))
        .expect("the token is listed");
    assert!(line.contains("valid") && line.contains("fog-a"), "{line}");
    assert!(!listed.contains(secret), "list must never show a secret");
}

#[test]
fn a_ttl_out_of_range_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for ttl in ["1s", "90d", "soon"] {
        let out = run(
            "fogshell-coordinator",
            &["join-token", "create", "--data-dir", data, "--ttl", ttl],
        );
        assert_eq!(out.status.code(), Some(2), "--ttl {ttl}: {out:?}");
    }
}

/// interfaces-v1 §2: admission *requires* a signature, provenance and an SBOM. A policy
/// whose rule asks for less is refused when the coordinator starts, saying what is missing.
#[test]
fn a_policy_that_does_not_require_all_three_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let keygen = std::process::Command::new(fogshell_e2e::binary("fogshell-coordinator"))
        .args(["image", "keygen", "--output-prefix"])
        .arg(dir.path().join("trusted"))
        .env("COSIGN_PASSWORD", "test")
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{keygen:?}");
    let policy = dir.path().join("admission.toml");
    std::fs::write(
        &policy,
        "[[rules]]\nname = \"signed-only\"\nrepositories = [\"registry.example.org/*\"]\n\
         keys = [\"trusted.pub\"]\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut serve = std::process::Command::new(fogshell_e2e::binary("fogshell-coordinator"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--admission-policy")
        .arg(&policy)
        .args(
            fogshell_e2e::FABRIC_ONLY_SERVE_ARGS
                .iter()
                .filter(|a| **a != "--dev"),
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = serve.kill();
            panic!("the coordinator started under a policy without provenance and SBOM");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("signed-only") && stderr.contains("provenance") && stderr.contains("SBOM"),
        "{stderr}"
    );
}

/// The systemd units in `systemd/` pass `systemd-analyze verify` — with `ExecStart` pointed
/// at the binaries just built, since they are not installed on the test machine.
#[test]
fn the_systemd_units_verify() {
    let dir = tempfile::tempdir().unwrap();
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
    let env_file = dir.path().join("coordinator.env");
    std::fs::write(&env_file, "FOGSHELL_SERVE_ARGS=--dev-issuer\n").unwrap();
    let mut paths = Vec::new();
    for name in ["fogshell-coordinator.service", "fogshell-agent.service"] {
        let text = std::fs::read_to_string(units.join(name)).unwrap();
        let binary = name.trim_end_matches(".service");
        let text = text
            .replace(
                &format!("/usr/local/bin/{binary}"),
                fogshell_e2e::binary(binary).to_str().unwrap(),
            )
            .replace("/etc/fogshell/coordinator.env", env_file.to_str().unwrap());
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let verified = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .expect("systemd-analyze (Debian's systemd package) runs");
    assert!(
        verified.status.success() && verified.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
}
