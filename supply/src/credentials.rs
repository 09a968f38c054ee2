//! Registry credentials from an auth file in the format `podman login`, `skopeo login` and
//! `docker login` write (`containers-auth.json(5)`, Docker's `config.json`):
//!
//! ```json
//! {"auths": {"registry.example.org": {"auth": "base64 of user:password"},
//!            "https://index.docker.io/v1/": {"auth": "…"}}}
//! ```
//!
//! A key names a registry (`host[:port]`, as `docker login` writes it, scheme and API path
//! allowed); registries with no entry are read anonymously. Refused, with a message saying
//! so rather than read anonymously: credential helpers (`credsStore`, `credHelpers`) and
//! identity tokens, which need programs or flows a fog node does not have; and keys scoped to
//! a repository path (`quay.io/team`), because the registry client keeps one login per
//! registry.
//!
//! The password stays in memory only: it is never logged, and `Debug` shows the user alone.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

/// Credentials by registry.
#[derive(Clone, Default)]
pub struct Credentials {
    /// Registry host (`host[:port]`, Docker Hub as `docker.io`) → (user, password).
    by_key: BTreeMap<String, (String, String)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.by_key.iter().map(|(key, (user, _))| (key, user)))
            .finish()
    }
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// Docker Hub goes by several names; credentials for any of them are for all.
fn canonical_host(host: &str) -> &str {
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        other => other,
    }
}

/// The registry a key as `docker login` may write it names (`https://index.docker.io/v1/`,
/// `host:port`); `None` for a key scoped to a repository path.
fn registry_of_key(key: &str) -> Option<String> {
    let bare = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key)
        .trim_end_matches('/');
    let (host, path) = bare.split_once('/').unwrap_or((bare, ""));
    // Docker's own key for the Hub carries its API version, which names no repository.
    matches!(path, "" | "v1" | "v2").then(|| canonical_host(host).to_owned())
}

impl Credentials {
    /// No credentials: every registry is read anonymously.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses an auth file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        let file: AuthFile =
            serde_json::from_str(text).map_err(|e| format!("{origin}: not an auth file: {e}"))?;
        if let Some(store) = file.creds_store {
            return Err(format!(
                "{origin}: credential helpers (credsStore {store:?}) are not supported; \
                 write the credentials themselves under \"auths\" \
                 (`skopeo login --authfile {origin} REGISTRY`)"
            ));
        }
        if let Some(registry) = file.cred_helpers.keys().next() {
            return Err(format!(
                "{origin}: credential helpers (credHelpers for {registry}) are not supported; \
                 write the credentials themselves under \"auths\""
            ));
        }
        let mut by_key = BTreeMap::new();
        for (key, entry) in file.auths {
            let what = |problem: &str| format!("{origin}: the entry for {key}: {problem}");
            let Some(auth) = entry.auth.filter(|a| !a.is_empty()) else {
                return Err(what(if entry.identitytoken.is_some() {
                    "identity tokens are not supported, only a user and password (\"auth\")"
                } else {
                    "no \"auth\""
                }));
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| what("\"auth\" is not base64"))?;
            let decoded =
                String::from_utf8(decoded).map_err(|_| what("\"auth\" is not UTF-8 text"))?;
            let Some((user, password)) = decoded.split_once(':') else {
                return Err(what("\"auth\" is not user:password"));
            };
            if user.is_empty() {
                return Err(what("the user is empty"));
            }
            let registry = registry_of_key(&key).ok_or_else(|| {
                what("credentials for a repository path are not supported, only per registry")
            })?;
            by_key.insert(registry, (user.to_owned(), password.to_owned()));
        }
        Ok(Self { by_key })
    }

    /// Reads the auth file at `path`. It holds passwords: a file others may read is named in
    /// a warning.
    pub fn load(path: &Path) -> Result<Self, String> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{origin}: {e}"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(
                    file = %origin,
                    "the registry auth file can be read by others: chmod 600 it"
                );
            }
        }
        let credentials = Self::parse(&text, &origin)?;
        tracing::info!(
            file = %origin,
            entries = credentials.by_key.len(),
            "registry credentials loaded"
        );
        Ok(credentials)
    }

    /// `Credentials::load` of `path`, or none without one.
    pub fn load_optional(path: Option<&Path>) -> Result<Self, String> {
        path.map_or_else(|| Ok(Self::none()), Self::load)
    }

    /// How to authenticate to `registry` (`host[:port]`): its entry, or anonymously.
    pub fn auth_for(&self, registry: &str) -> RegistryAuth {
        match self.by_key.get(canonical_host(registry)) {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// Whether any credentials are known.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// A registry client's error as an operator reads it: a refused login says where a login goes.
pub fn explain(error: &OciDistributionError) -> String {
    match error {
        OciDistributionError::UnauthorizedError { .. } => format!(
            "{error} (the registry wants a login, or refused the one given: a login goes in \
             the registry auth file)"
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(user_password: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(user_password)
    }

    fn basic(auth: RegistryAuth) -> Option<(String, String)> {
        match auth {
            RegistryAuth::Basic(user, password) => Some((user, password)),
            _ => None,
        }
    }

    #[test]
    fn each_registry_gets_its_entry_and_others_are_anonymous() {
        let text = serde_json::json!({"auths": {
            "registry.example.org:5000": {"auth": auth("ops:s3cret:with:colons")},
            "https://quay.io": {"auth": auth("q:q")},
            "https://index.docker.io/v1/": {"auth": auth("hub:h")},
        }})
        .to_string();
        let creds = Credentials::parse(&text, "auth.json").unwrap();
        assert_eq!(
            basic(creds.auth_for("registry.example.org:5000")),
            Some(("ops".into(), "s3cret:with:colons".into()))
        );
        let user = |registry: &str| basic(creds.auth_for(registry)).map(|(user, _)| user);
        assert_eq!(user("quay.io").as_deref(), Some("q"));
        assert_eq!(user("index.docker.io").as_deref(), Some("hub"));
        assert_eq!(user("docker.io").as_deref(), Some("hub"));
        // Another port is another registry.
        assert_eq!(user("registry.example.org"), None);
        assert_eq!(basic(Credentials::none().auth_for("quay.io")), None);
    }

    #[test]
    fn passwords_never_show_in_debug() {
        let text = format!(
            r#"{{"auths": {{"r.example": {{"auth": "{}"}}}}}}"#,
            auth("u:hunter2")
        );
        let shown = format!("{:?}", Credentials::parse(&text, "f").unwrap());
        assert!(
            shown.contains("r.example") && shown.contains('u'),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn what_cannot_be_used_is_refused_by_name() {
        let refused = |text: &str| Credentials::parse(text, "auth.json").unwrap_err();
        assert!(refused(r#"{"credsStore": "desktop"}"#).contains("credential helpers"));
        assert!(refused(r#"{"credHelpers": {"gcr.io": "gcloud"}}"#).contains("gcr.io"));
        let token = refused(r#"{"auths": {"r.example": {"identitytoken": "x"}}}"#);
        assert!(
            token.contains("r.example") && token.contains("identity tokens"),
            "{token}"
        );
        assert!(refused(r#"{"auths": {"r.example": {"auth": "%%%"}}}"#).contains("base64"));
        let no_colon = format!(
            r#"{{"auths": {{"r.example": {{"auth": "{}"}}}}}}"#,
            auth("u")
        );
        assert!(refused(&no_colon).contains("user:password"));
        let scoped = format!(
            r#"{{"auths": {{"quay.io/team": {{"auth": "{}"}}}}}}"#,
            auth("u:p")
        );
        assert!(refused(&scoped).contains("repository path"));
        assert!(refused("\"auths\"").contains("auth.json"));
        // An empty file of the right shape is no credentials, not an error.
        assert!(Credentials::parse("{}", "auth.json").unwrap().is_empty());
        assert!(Credentials::load(Path::new("/nonexistent/auth.json")).is_err());
    }
}
