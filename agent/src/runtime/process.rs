//! The `process` driver: a host shell on a PTY (through portable-pty, in the session's shim).
//!
//! For development without root. It isolates nothing and enforces no limits, so a node that
//! runs it has trust tier `dev`, and every policy above `dev` refuses it. The image is not
//! used: the shell is the host's.

use std::path::PathBuf;
use tracing::Instrument as _;

use fogshell_shared::frame::TermSize;
use fogshell_shared::wire::{LimitKind, LimitMismatch, LimitsReport};
use fogshell_shared::{ResourceLimits, RuntimeDriver, RuntimeRef, SessionId, TrustTier};

use super::shim_host::SessionRecord;
use super::{Runtime, RuntimeError, SessionRequest, ShimHost};
use crate::shim::protocol::{ChildSpec, ShimSpec};

/// Runs sessions as host shells.
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    host: ShimHost,
    shell: Vec<String>,
}

/// The trust tier a node running this driver has.
pub const TRUST_TIER: TrustTier = TrustTier::Dev;

impl ProcessRuntime {
    /// Sessions live under `host`; each runs `shell` (program and arguments).
    pub fn new(host: ShimHost, shell: Vec<String>) -> Self {
        Self { host, shell }
    }

    /// A session's directory (for checks that nothing is left behind).
    pub fn host_dir(&self, session_id: SessionId) -> PathBuf {
        self.host.session_dir(session_id)
    }

    /// The host's login shell: bash if it is there, else sh.
    pub fn default_shell() -> Vec<String> {
        if std::path::Path::new("/bin/bash").exists() {
            vec!["/bin/bash".into(), "--login".into()]
        } else {
            vec!["/bin/sh".into(), "-l".into()]
        }
    }
}

impl Runtime for ProcessRuntime {
    fn host(&self) -> &ShimHost {
        &self.host
    }

    fn driver(&self) -> RuntimeDriver {
        RuntimeDriver::Process
    }

    async fn allocate(&self, spec: &SessionRequest) -> Result<RuntimeRef, RuntimeError> {
        if spec.trust_tier > TRUST_TIER {
            return Err(RuntimeError::Refused(format!(
                "the process driver runs only `dev` sessions, not `{}`",
                spec.trust_tier
            )));
        }
        let span = tracing::info_span!("allocate", session_id = %spec.session_id, tenant = %spec.tenant, driver = "process");
        async move {
            let dir = self.host.create_dir(spec.session_id)?;
            let home = dir.join("home");
            std::fs::create_dir(&home).map_err(RuntimeError::io("creating the session home"))?;
            let runtime_ref = RuntimeRef {
                driver: RuntimeDriver::Process,
                id: format!("proc-{}", spec.session_id.as_uuid().simple())
                    .parse()
                    .map_err(|e| RuntimeError::Refused(format!("{e}")))?,
            };
            let shim_spec = ShimSpec {
                session_id: spec.session_id,
                size: TermSize::new(80, 24).expect("80x24 is in range"),
                child: ChildSpec::Process {
                    argv: spec.command.clone().unwrap_or_else(|| self.shell.clone()),
                    cwd: home.clone(),
                    env: session_env(&home, spec.session_id),
                },
            };
            let record = SessionRecord {
                session_id: spec.session_id,
                tenant: spec.tenant.clone(),
                runtime_ref: runtime_ref.clone(),
                limits: spec.limits,
                started_at: crate::clock::now(),
            };
            if let Err(error) = self.host.start(&record, &shim_spec, None).await {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(error);
            }
            tracing::info!("session started");
            Ok(runtime_ref)
        }
        .instrument(span)
        .await
    }

    async fn enforce_limits(&self, session_id: SessionId) -> Result<LimitsReport, RuntimeError> {
        let record = self.host.record(session_id)?;
        // No cgroup: every limit is unenforced, and the report says so.
        let unlimited = |limit, wanted| LimitMismatch {
            limit,
            wanted,
            found: u64::MAX,
        };
        Ok(LimitsReport {
            applied: ResourceLimits::UNLIMITED,
            mismatches: vec![
                unlimited(LimitKind::Cpu, record.limits.cpu_millis.into()),
                unlimited(LimitKind::Memory, record.limits.memory_bytes),
                unlimited(LimitKind::Pids, record.limits.pids.into()),
            ],
            usage: None,
        })
    }
}

/// The whole environment of a session's shell: nothing is inherited from the agent.
fn session_env(home: &std::path::Path, session_id: SessionId) -> Vec<(String, String)> {
    let home: PathBuf = home.to_path_buf();
    vec![
        ("HOME".into(), home.display().to_string()),
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("TERM".into(), "xterm-256color".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("FOGSHELL_SESSION".into(), session_id.to_string()),
    ]
}
