//! The browser console end to end: a real OpenID provider (`oidc-provider` from npm, with a
//! test user, on loopback), a coordinator that trusts it, a node with containers, and
//! Playwright driving Debian's headless Chromium through `console/test/console.test.mjs`:
//! login with authorization code + PKCE, create (placed by the round trips the page measured,
//! the terminal straight to the node's own gateway over TLS, its certificate from the
//! coordinator's CA, which the browser trusts), type, resize, drop the WebSocket (the
//! console continues through the coordinator's relay), terminate, log out. The screenshot it takes of a live terminal lands in `target/tmp/console.png`
//! (`docs/console.png` is a copy of one; a test run leaves the work tree as it was).
//!
//! Needs `npm ci` and `npm run build` in `console/` (scripts/test.sh does both before the
//! coordinator is built, so the binary embeds the console) and Debian's `chromium`.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use fogshell_e2e::stack::{NodeSpec, Stack};

/// The audience the provider puts in access tokens (a resource indicator is a URI).
const AUDIENCE: &str = "urn:fogshell";

fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../console")
}

/// The provider, stopped when dropped.
struct Provider(Child);

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_provider(redirect: &str) -> (Provider, String) {
    let dir = console_dir();
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "console/node_modules is missing: run `npm ci` in console/ (scripts/test.sh does)"
    );
    let mut child = Command::new("node")
        .arg(dir.join("test/oidc-server.mjs"))
        .args([
            "--port",
            "0",
            "--audience",
            AUDIENCE,
            "--redirect-uri",
            redirect,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node (scripts/install-deps.sh installs it)");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let issuer = lines
        .find_map(|line| line.ok()?.strip_prefix("issuer ").map(str::to_owned))
        .expect("the provider printed its issuer");
    (Provider(child), issuer)
}

fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A home directory whose NSS database — where Chromium on Linux looks up trusted roots —
/// trusts `ca` (PEM) for TLS servers, as an organisation's managed browsers would.
fn browser_home_trusting(ca: &Path) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("a home for the browser");
    let db = home.path().join(".pki/nssdb");
    std::fs::create_dir_all(&db).expect("the NSS database's directory");
    let db = format!("sql:{}", db.display());
    let certutil = |args: &[&str]| {
        let out = Command::new("certutil")
            .args(args)
            .output()
            .expect("certutil (libnss3-tools; scripts/install-deps.sh installs it)");
        assert!(out.status.success(), "certutil {args:?}: {out:?}");
    };
    certutil(&["-N", "--empty-password", "-d", &db]);
    let ca = ca.display().to_string();
    certutil(&["-A", "-n", "fogshell", "-t", "C,,", "-i", &ca, "-d", &db]);
    home
}

#[test]
fn the_console_logs_in_and_runs_a_terminal_in_headless_chromium() {
    let port = free_loopback_port();
    let console_url = format!("http://127.0.0.1:{port}/console/");
    let (_provider, issuer) = start_provider(&console_url);
    // Both gateways are on loopback: the page measures them about equal, and placement keeps
    // the node's own gateway unless the relay is clearly (5 ms) faster.
    let mut stack =
        Stack::coordinator_for_issuer(&issuer, AUDIENCE, &format!("127.0.0.1:{port}"), &[]);
    // fog-a runs its own gateway over TLS with a certificate from the coordinator's CA: the
    // page must reach it directly (its content security policy names it, the browser trusts
    // the CA), then fall back to the relay.
    stack.add(&NodeSpec {
        gateway: true,
        gateway_tls: true,
        ..NodeSpec::new("fog-a")
    });
    let home = browser_home_trusting(&stack.data_dir().join("pki/ca.crt"));

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    let _ = std::fs::remove_file(&screenshot);
    let run = Command::new("node")
        .arg(console_dir().join("test/console.test.mjs"))
        .env("CONSOLE_URL", &console_url)
        .env("OIDC_LOGIN", "alice:wonderland")
        .env("SCREENSHOT", &screenshot)
        .env("EDGE_GATEWAY", "1")
        .env("HOME", home.path())
        .output()
        .expect("node");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{output}\n{}", stack.logs());
    assert!(output.contains("all passed"), "{output}");
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG"),
        "not a PNG: {}",
        screenshot.display()
    );
}

/// The README's first command's stack, `fogshell-coordinator up`: the same console test
/// through its development issuer (no login form), a local agent and real containers.
#[test]
fn the_console_works_on_the_all_in_one_stack() {
    let data = tempfile::tempdir().expect("temp dir");
    let (http, quic) = (free_loopback_port(), free_loopback_port());
    let mut up = Command::new(fogshell_e2e::binary("fogshell-coordinator"))
        .args(["up", "--http", &format!("127.0.0.1:{http}")])
        .args(["--quic", &format!("127.0.0.1:{quic}")])
        .arg("--data-dir")
        .arg(data.path())
        .arg("--image-layout")
        .arg(fogshell_e2e::stack::default_layout())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("fogshell-coordinator up");
    let mut lines = BufReader::new(up.stdout.take().expect("stdout")).lines();
    let console_url = lines
        .by_ref()
        .find_map(|line| Some(line.ok()?.trim().strip_prefix("console")?.trim().to_owned()))
        .expect("up printed the console's address");
    // Keep reading what it prints, as a terminal would.
    std::thread::spawn(move || lines.for_each(drop));
    let run = Command::new("node")
        .arg(console_dir().join("test/console.test.mjs"))
        .env("CONSOLE_URL", &console_url)
        .env("OIDC_LOGIN", "dev:")
        .output()
        .expect("node");
    // Ctrl-C, as a user stops it: the stack stops its agent too.
    let _ = Command::new("kill")
        .args(["-INT", &up.id().to_string()])
        .status();
    let _ = up.wait();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        run.status.success() && output.contains("all passed"),
        "{output}"
    );
}
