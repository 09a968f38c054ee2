//! What attestation remembers, in two JSON files in the data directory's `attestation/`:
//!
//! - `nodes.json`, the coordinator's: per node the pinned EK and AK (by name), the PCR values
//!   at enrollment and the last verified ones;
//! - `references.json`, the operator's: reference PCR values per node and per node group
//!   (the node label `attestation-group`), written by `fogshell-coordinator attestation
//!   reference` and re-read at every check, so a new reference takes effect without a
//!   restart.
//!
//! Each file has one writer and is replaced atomically, so readers never see half of one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fogshell_shared::NodeId;
use fogshell_shared::files::{Durability, write_atomically};
use fogshell_shared::wire::attest::PcrValue;
use serde::{Deserialize, Serialize};

/// PCR index → SHA-256 value (hex).
pub type PcrMap = BTreeMap<u8, String>;

/// PCR values as a map.
pub fn pcr_map(values: &[PcrValue]) -> PcrMap {
    values
        .iter()
        .map(|v| (v.index, hex::encode(v.digest)))
        .collect()
}

/// What the coordinator pinned for a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// SHA-256 of the EK's public area (hex).
    pub ek_hash: String,
    /// The AK's TPM name (hex), bound to the EK by credential activation.
    pub ak_name: String,
    /// When the AK was bound.
    pub enrolled_at: String,
    /// The PCR values of the first verified quote.
    pub enrollment_pcrs: PcrMap,
    /// The PCR values of the last verified quote.
    pub last_pcrs: PcrMap,
}

/// The operator's reference values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct References {
    /// Per node.
    #[serde(default)]
    pub nodes: BTreeMap<NodeId, PcrMap>,
    /// Per node group (the node label `attestation-group`).
    #[serde(default)]
    pub groups: BTreeMap<String, PcrMap>,
}

/// The two files.
#[derive(Debug)]
pub struct AttestationState {
    dir: PathBuf,
    nodes: Mutex<BTreeMap<NodeId, NodeRecord>>,
}

fn read_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    write_atomically(path, &bytes, 0o600, Durability::Synced)
        .map_err(|e| format!("{}: {e}", path.display()))
}

impl AttestationState {
    /// Opens (and creates) `data_dir/attestation`.
    pub fn open(data_dir: &Path) -> Result<Self, String> {
        let dir = data_dir.join("attestation");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let nodes = read_json(&dir.join("nodes.json"))?;
        Ok(Self {
            dir,
            nodes: Mutex::new(nodes),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, NodeRecord>> {
        fogshell_shared::sync::lock(&self.nodes)
    }

    /// What is pinned for `node`.
    pub fn node(&self, node: &NodeId) -> Option<NodeRecord> {
        self.lock().get(node).cloned()
    }

    /// Every pinned node.
    pub fn nodes(&self) -> BTreeMap<NodeId, NodeRecord> {
        self.lock().clone()
    }

    /// Stores `record` for `node` (durably: a pin must survive a crash).
    pub fn put_node(&self, node: &NodeId, record: NodeRecord) -> Result<(), String> {
        let mut nodes = self.lock();
        let mut next = nodes.clone();
        next.insert(node.clone(), record);
        write_json(&self.dir.join("nodes.json"), &next)?;
        *nodes = next;
        Ok(())
    }

    /// The operator's references, as the file says now.
    pub fn references(&self) -> Result<References, String> {
        read_json(&self.references_path())
    }

    fn references_path(&self) -> PathBuf {
        self.dir.join("references.json")
    }

    /// Replaces the references file (the operator command).
    pub fn put_references(&self, references: &References) -> Result<(), String> {
        write_json(&self.references_path(), references)
    }
}
