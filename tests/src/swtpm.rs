//! Software TPMs for attestation tests: Debian's `swtpm`, manufactured per test by
//! `swtpm_setup` with an EK certificate from a test manufacturer CA (`swtpm_localca`), served
//! on loopback TCP and stopped when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A test TPM manufacturer: a root and an issuing CA made by `swtpm_localca` on first use.
#[derive(Debug)]
pub struct TpmManufacturer {
    dir: tempfile::TempDir,
}

impl TpmManufacturer {
    /// A new manufacturer (its CA is made when it manufactures its first TPM).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("ca")).expect("ca dir");
        let write = |name: &str, text: String| {
            std::fs::write(root.join(name), text).expect("swtpm config");
        };
        write(
            "setup.conf",
            format!(
                "create_certs_tool = /usr/bin/swtpm_localca\n\
                 create_certs_tool_config = {0}/localca.conf\n\
                 create_certs_tool_options = {0}/localca.options\n\
                 active_pcr_banks = sha256\n",
                root.display()
            ),
        );
        write(
            "localca.conf",
            format!(
                "statedir = {0}/ca\nsigningkey = {0}/ca/signkey.pem\n\
                 issuercert = {0}/ca/issuercert.pem\ncertserial = {0}/ca/certserial\n",
                root.display()
            ),
        );
        write(
            "localca.options",
            "--platform-manufacturer fogshell-test\n--platform-version 2.1\n--platform-model swtpm\n"
                .into(),
        );
        Self { dir }
    }

    /// Makes a TPM's state in `state_dir`, with an EK certificate or without.
    fn manufacture(&self, state_dir: &Path, ek_certificate: bool) {
        let mut command = Command::new("swtpm_setup");
        command
            .args(["--tpm2", "--overwrite", "--tpmstate"])
            .arg(state_dir)
            .arg("--config")
            .arg(self.dir.path().join("setup.conf"));
        if ek_certificate {
            command.arg("--create-ek-cert");
        }
        let out = command
            .output()
            .expect("swtpm_setup (Debian swtpm-tools) must be installed");
        assert!(out.status.success(), "swtpm_setup failed: {out:?}");
    }

    /// The CA certificates (issuing and root) as one PEM file, for `serve --tpm-ca`. Exists
    /// once the manufacturer made a TPM with an EK certificate.
    pub fn ca_bundle(&self) -> PathBuf {
        let ca = self.dir.path().join("ca");
        let mut pem = std::fs::read_to_string(ca.join("issuercert.pem")).expect("issuing CA");
        pem.push_str(
            &std::fs::read_to_string(ca.join("swtpm-localca-rootca-cert.pem")).expect("root CA"),
        );
        let path = self.dir.path().join("manufacturer-cas.pem");
        std::fs::write(&path, pem).expect("CA bundle");
        path
    }
}

impl Default for TpmManufacturer {
    fn default() -> Self {
        Self::new()
    }
}

/// A running software TPM.
#[derive(Debug)]
pub struct Swtpm {
    _state: tempfile::TempDir,
    child: Child,
    port: u16,
}

/// A loopback port `p` with `p + 1` free too (the swtpm TCTI finds the control port there).
fn free_port_pair() -> u16 {
    loop {
        let first = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = first.local_addr().expect("address").port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

impl Swtpm {
    /// A fresh TPM from `manufacturer`, with an EK certificate.
    pub fn start(manufacturer: &TpmManufacturer) -> Self {
        Self::start_with(manufacturer, true)
    }

    /// A fresh TPM, with or without an EK certificate.
    pub fn start_with(manufacturer: &TpmManufacturer, ek_certificate: bool) -> Self {
        let state = tempfile::tempdir().expect("temp dir");
        manufacturer.manufacture(state.path(), ek_certificate);
        let port = free_port_pair();
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--server"])
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .arg("--tpmstate")
            .arg(format!("dir={}", state.path().display()))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm (Debian swtpm) must be installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "swtpm did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            _state: state,
            child,
            port,
        }
    }

    /// The TCTI string the agent's `[node] tpm` takes.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Extends a SHA-256 PCR (as a changed boot component would), with tpm2-tools.
    pub fn extend_pcr(&self, index: u8) {
        let digest = "ab".repeat(32);
        let out = Command::new("tpm2_pcrextend")
            .arg(format!("{index}:sha256={digest}"))
            .env("TPM2TOOLS_TCTI", self.tcti())
            .output()
            .expect("tpm2_pcrextend (Debian tpm2-tools) must be installed");
        assert!(out.status.success(), "tpm2_pcrextend failed: {out:?}");
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
