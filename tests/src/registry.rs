//! A real OCI registry for tests: Debian's `docker-registry` on a loopback port, fed by
//! `skopeo`.

use std::time::Duration;

/// How long the registry may take to start.
const PATIENCE: Duration = Duration::from_secs(10);

/// A real OCI registry (Debian's `docker-registry`) on a loopback port, with filesystem
/// storage in a temporary folder; stopped when dropped.
#[derive(Debug)]
pub struct LocalRegistry {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The user and password it demands, if it demands a login.
    pub login: Option<(String, String)>,
    /// The registry's storage folder.
    pub storage: std::path::PathBuf,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl LocalRegistry {
    /// Starts one that anyone may read and write, and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts one that demands a login (HTTP basic, a fresh random password), and waits
    /// until it answers.
    pub fn start_with_login() -> Self {
        let mut secret = [0u8; 18];
        getrandom::fill(&mut secret).expect("random bytes");
        let password = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE, secret);
        Self::start_with(Some(("fogshell-ci".to_owned(), password)))
    }

    /// An auth file naming this registry's login, as `skopeo login --authfile` writes it,
    /// in `dir` (mode 0600).
    pub fn auth_file(&self, dir: &std::path::Path) -> std::path::PathBuf {
        use std::os::unix::fs::OpenOptionsExt as _;
        let (user, password) = self.login.as_ref().expect("a registry with a login");
        let auth = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{user}:{password}"),
        );
        let path = dir.join("registry-auth.json");
        let mut file = std::fs::File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(
            &mut file,
            serde_json::json!({"auths": {&self.addr: {"auth": auth}}})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        path
    }

    fn start_with(login: Option<(String, String)>) -> Self {
        let binary = "/usr/bin/docker-registry";
        assert!(
            std::path::Path::new(binary).exists(),
            "{binary} is missing: install Debian's docker-registry (scripts/install-deps.sh does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let storage = dir.path().join("storage");
        let mut config_text = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            storage.display()
        );
        if let Some((user, password)) = &login {
            // docker-registry reads only bcrypt hashes.
            let htpasswd = dir.path().join("htpasswd");
            let hash = bcrypt::hash(password, 4).expect("bcrypt");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
            config_text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: fogshell-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config = dir.path().join("config.yml");
        std::fs::write(&config, config_text).unwrap();
        let log = dir.path().join("registry.log");
        let child = std::process::Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the registry did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            addr,
            login,
            storage,
            log,
            _dir: dir,
        }
    }

    /// Pushes image `name` of an OCI layout as `repository:tag`, digests unchanged (skopeo).
    pub fn push_layout(&self, layout: &std::path::Path, name: &str, repository: &str) {
        let status = std::process::Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--preserve-digests",
                "--dest-tls-verify=false",
            ])
            .args(
                self.login
                    .iter()
                    .map(|(user, password)| format!("--dest-creds={user}:{password}")),
            )
            .arg(format!("oci:{}:{name}", layout.display()))
            .arg(format!("docker://{}/{repository}:latest", self.addr))
            .status()
            .expect("skopeo runs (scripts/install-deps.sh installs it)");
        assert!(status.success(), "skopeo could not push {repository}");
    }

    /// How many times the registry served a GET for this path suffix.
    pub fn gets(&self, path_suffix: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET ") && l.contains(path_suffix) && l.contains("\" 200 "))
            .count()
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LocalRegistry {
    /// Deletes the manifest `repository:tag` points at (as an attacker with write access to
    /// the registry could).
    pub fn delete_manifest(&self, repository: &str, tag: &str) {
        let url = format!("http://{}/v2/{repository}/manifests", self.addr);
        let head = std::process::Command::new("curl")
            .args([
                "-sfI",
                "-H",
                "accept: application/vnd.oci.image.manifest.v1+json",
            ])
            .arg(format!("{url}/{tag}"))
            .output()
            .expect("curl runs");
        let headers = String::from_utf8_lossy(&head.stdout);
        let digest = headers
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("docker-content-digest:")
                    .map(|d| d.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("no manifest {repository}:{tag}: {headers}"));
        let status = std::process::Command::new("curl")
            .args(["-sf", "-X", "DELETE"])
            .arg(format!("{url}/{digest}"))
            .status()
            .expect("curl runs");
        assert!(status.success(), "could not delete {repository}:{tag}");
    }
}
