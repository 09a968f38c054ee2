//! Image admission on the coordinator: the policy file (`serve --admission-policy`), and
//! checks of session images against it, cached by image.
//!
//! ```toml
//! [[rules]]
//! name = "fogshell-images"
//! repositories = ["registry.example.org/fogshell/*"]
//! keys = ["cosign.pub"]                          # PEM files, relative to this file
//! require_predicates = ["https://slsa.dev/provenance/v0.2"]
//! builder_ids = ["https://tekton.dev/chains/v2"]
//! require_sbom = true
//! ```
//!
//! Production (the default) refuses every image no rule admits. `--dev` lets the default
//! image run unverified, and says so in the log and in each admission's audit record.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fogshell_shared::ImageRef;
use fogshell_shared::admission::{AdmissionPolicy, Mode, Rule};
use fogshell_supply::registry::Registry;
use fogshell_supply::{Denied, Verified};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    rules: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: String,
    repositories: Vec<String>,
    keys: Vec<PathBuf>,
    #[serde(default)]
    require_predicates: Vec<String>,
    #[serde(default)]
    builder_ids: Vec<String>,
    #[serde(default)]
    require_sbom: bool,
}

/// Loads the policy: the file's rules with their keys read, production unless `dev` (then
/// `default_image` may run unverified). Production without a file is refused: it would
/// admit nothing, which is never what an operator means.
pub fn load_policy(
    path: Option<&Path>,
    dev: bool,
    default_image: &ImageRef,
) -> Result<AdmissionPolicy, String> {
    let rules = match path {
        Some(path) => read_rules(path)?,
        None if dev => Vec::new(),
        None => {
            return Err(
                "production needs an admission policy (--admission-policy FILE); \
                 --dev runs the default image unverified instead"
                    .into(),
            );
        }
    };
    Ok(AdmissionPolicy {
        mode: if dev { Mode::Dev } else { Mode::Production },
        dev_exempt: if dev { default_image.digest() } else { None },
        rules,
    })
}

fn read_rules(path: &Path) -> Result<Vec<Rule>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: PolicyFile = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut rules = Vec::new();
    for rule in file.rules {
        if rule.keys.is_empty() || rule.repositories.is_empty() {
            return Err(format!(
                "{}: rule {} needs repositories and keys",
                path.display(),
                rule.name
            ));
        }
        let mut keys = Vec::new();
        for key in &rule.keys {
            let key_path = base.join(key);
            let pem = std::fs::read_to_string(&key_path)
                .map_err(|e| format!("{}: {e}", key_path.display()))?;
            fogshell_supply::keys::PublicKey::from_pem(&pem)
                .map_err(|e| format!("{}: {e}", key_path.display()))?;
            keys.push(pem);
        }
        let rule = Rule {
            name: rule.name,
            repositories: rule.repositories,
            keys,
            require_predicates: rule.require_predicates,
            builder_ids: rule.builder_ids,
            require_sbom: rule.require_sbom,
        };
        // The seed's "requires", to the letter: no rule may let an image in on less.
        let missing = rule.missing_requirements();
        if !missing.is_empty() {
            return Err(format!(
                "{}: rule {} must require a signature, provenance and an SBOM (interfaces-v1 §2); it does not require {}",
                path.display(),
                rule.name,
                missing.join(", ")
            ));
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// Admission checks with a cache.
#[derive(Debug)]
pub struct Admission {
    policy: AdmissionPolicy,
    registry: Registry,
    /// Admitted images by reference: a digest's signatures are checked once per coordinator
    /// run (refusals are not cached: a signature pushed later should count).
    admitted: Mutex<HashMap<String, Verified>>,
}

impl Admission {
    /// Checks under `policy`, reading artifacts from `registry`.
    pub fn new(policy: AdmissionPolicy, registry: Registry) -> Self {
        if policy.mode == Mode::Dev {
            tracing::warn!("dev mode: the default image runs without signature verification");
        }
        Self {
            policy,
            registry,
            admitted: Mutex::new(HashMap::new()),
        }
    }

    /// The policy (agents get it in their welcome).
    pub fn policy(&self) -> &AdmissionPolicy {
        &self.policy
    }

    /// Whether `image` may run: what was verified, and whether that came from the cache.
    pub async fn check(&self, image: &ImageRef) -> Result<(Verified, bool), Denied> {
        let key = image.to_string();
        if let Some(verified) = fogshell_shared::sync::lock(&self.admitted).get(&key) {
            return Ok((verified.clone(), true));
        }
        let verified = fogshell_supply::admit(&self.registry, &self.policy, image).await?;
        fogshell_shared::sync::lock(&self.admitted).insert(key, verified.clone());
        Ok((verified, false))
    }
}
