//! Both binaries start, say what they speak, and refuse bad arguments the way a CLI should.

use fogshell_e2e::run;
use fogshell_shared::wire::{BuildInfo, SUPPORTED_VERSIONS};

const BINARIES: [&str; 2] = ["fogshell-agent", "fogshell-coordinator"];

#[test]
fn info_reports_the_protocol_this_build_speaks() {
    for name in BINARIES {
        let out = run(name, &["info"]);
        assert!(out.status.success(), "{name} info failed: {out:?}");
        let info: BuildInfo = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{name} info printed no BuildInfo JSON ({e}): {out:?}"));
        assert_eq!(info.name, name);
        assert_eq!(info.protocol, SUPPORTED_VERSIONS);
        assert_eq!(info.alpn, "fogshell/2");
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    for name in BINARIES {
        let out = run(name, &["--log-format", "json", "info"]);
        assert!(out.status.success(), "{out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            !stderr.trim().is_empty(),
            "{name} logged nothing at debug level"
        );
        for line in stderr.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: log line is not JSON ({e}): {line}"));
            assert!(v.get("level").is_some(), "{line}");
        }
    }
}

#[test]
fn version_names_the_wire_protocol() {
    for name in BINARIES {
        let out = run(name, &["--version"]);
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with(name), "{text}");
        assert!(text.contains("wire protocol 2..=2"), "{text}");
    }
}

#[test]
fn bad_arguments_fail_with_usage_and_exit_2() {
    for name in BINARIES {
        let out = run(name, &["no-such-command"]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains("Usage"), "{stderr}");
    }
}
