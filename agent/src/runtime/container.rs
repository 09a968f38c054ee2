//! The `libcontainer` driver, the production one: each session is an OCI container created by
//! youki's libcontainer inside the session's shim, from an image in the [`ImageStore`], with
//! the spec [`bundle`](super::bundle) writes and the limits of the session's profile.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::Instrument as _;

use fogshell_shared::frame::TermSize;
use fogshell_shared::wire::{LimitKind, LimitMismatch, LimitsReport};
use fogshell_shared::{RuntimeDriver, RuntimeRef, SessionId};

use super::bundle::{self, BundleParams};
use super::cgroup::Layout;
use super::shim_host::SessionRecord;
use super::{Runtime, RuntimeError, SessionRequest, ShimHost};
use crate::image::registry::RegistryClient;
use crate::image::{ImageError, ImageStore};
use crate::shim::protocol::{ChildSpec, ShimSpec};

/// Runs sessions as containers.
#[derive(Debug, Clone)]
pub struct ContainerRuntime {
    host: ShimHost,
    images: Arc<ImageStore>,
    /// Where images missing from the store are pulled from.
    registry: Option<RegistryClient>,
    /// One pull at a time per image: two sessions wanting one image pull it once.
    pulls: Arc<tokio::sync::Mutex<HashMap<fogshell_shared::Digest, Arc<tokio::sync::Mutex<()>>>>>,
    /// libcontainer's state root (one folder per container).
    state_root: PathBuf,
    cgroups: Layout,
    /// The cgroup every session container of this runtime sits under.
    cgroup_parent: String,
    /// Images already prepared, with what a session's spec needs of them.
    ready: Arc<std::sync::Mutex<HashMap<fogshell_shared::Digest, Arc<ReadyImage>>>>,
}

/// A prepared image and the files of it every session's spec reads.
#[derive(Debug)]
struct ReadyImage {
    image: crate::image::PreparedImage,
    /// `/etc/passwd` and `/etc/group` (empty when the image has none).
    passwd: String,
    group: String,
}

/// The parent cgroup of every session container, unless [`ContainerRuntime::in_cgroup`] says
/// otherwise.
const CGROUP_PARENT: &str = "/fogshell";

/// A session's container id: `fs-` and the session id without dashes.
pub fn container_id(session_id: SessionId) -> String {
    format!("fs-{}", session_id.as_uuid().simple())
}

impl ContainerRuntime {
    /// Containers' libcontainer state lives in `<state_dir>/containers`. Images missing from
    /// the store are pulled through `registry`, when there is one.
    pub fn new(
        host: ShimHost,
        images: Arc<ImageStore>,
        registry: Option<RegistryClient>,
        state_dir: &std::path::Path,
    ) -> Self {
        Self {
            host,
            images,
            registry,
            pulls: Arc::default(),
            state_root: state_dir.join("containers"),
            cgroups: Layout::detect(),
            cgroup_parent: CGROUP_PARENT.into(),
            ready: Arc::default(),
        }
    }

    /// Puts the session containers under `parent` (`/fogshell/<node id>` for a served node),
    /// so two agents on one host — a test bed's fog and cloud nodes — never share a cgroup
    /// even when a failover gives both the same session.
    pub fn in_cgroup(mut self, parent: String) -> Self {
        self.cgroup_parent = parent;
        self
    }

    fn cgroups_path(&self, session_id: SessionId) -> String {
        format!("{}/{}", self.cgroup_parent, container_id(session_id))
    }

    /// The cgroup directories a session's container has (for checks that none is left).
    pub fn cgroup_dirs(&self, session_id: SessionId) -> Vec<PathBuf> {
        self.cgroups.dirs(&self.cgroups_path(session_id))
    }

    /// libcontainer's state folder for a session's container.
    pub fn container_state_dir(&self, session_id: SessionId) -> PathBuf {
        self.state_root.join(container_id(session_id))
    }

    async fn prepare_image(
        &self,
        request: &SessionRequest,
    ) -> Result<Arc<ReadyImage>, RuntimeError> {
        let image = request.image_ref.as_ref().ok_or_else(|| {
            RuntimeError::Refused("the libcontainer driver needs an image".into())
        })?;
        let digest = ImageStore::resolve(image).map_err(image_error)?;
        match self.prepare_stored(digest).await {
            Err(ImageError::NotFound(_)) if self.registry.is_some() => {}
            other => return other.map_err(image_error),
        }
        // Missing from the store: pull it, once, however many sessions wait for it.
        let lock = {
            let mut pulls = self.pulls.lock().await;
            Arc::clone(pulls.entry(digest).or_default())
        };
        let _pulling = lock.lock().await;
        if let Some(registry) = &self.registry {
            match self.prepare_stored(digest).await {
                Err(ImageError::NotFound(_)) => {
                    registry
                        .pull(&self.images, image)
                        .await
                        .map_err(image_error)?;
                }
                other => return other.map_err(image_error),
            }
        }
        self.prepare_stored(digest).await.map_err(image_error)
    }

    async fn prepare_stored(
        &self,
        digest: fogshell_shared::Digest,
    ) -> Result<Arc<ReadyImage>, ImageError> {
        // An unpacked root filesystem never changes (it is named by its digest): what was
        // read of it once serves every later session, as long as it is still there.
        let known = crate::lock(&self.ready).get(&digest).cloned();
        if let Some(ready) = known
            && ready.image.rootfs.is_dir()
        {
            return Ok(ready);
        }
        let images = Arc::clone(&self.images);
        let ready = tokio::task::spawn_blocking(move || {
            let image = images.prepare(&digest)?;
            let read_etc = |name: &str| {
                std::fs::read_to_string(image.rootfs.join("etc").join(name)).unwrap_or_default()
            };
            let (passwd, group) = (read_etc("passwd"), read_etc("group"));
            Ok::<_, ImageError>(Arc::new(ReadyImage {
                image,
                passwd,
                group,
            }))
        })
        .await
        .map_err(|e| ImageError::BadImage(format!("image task: {e}")))??;
        crate::lock(&self.ready).insert(digest, Arc::clone(&ready));
        Ok(ready)
    }
}

/// An image problem as the runtime reports it: I/O faults are the node's, everything else
/// (unpinned, missing, corrupt, hostile) refuses the request.
fn image_error(error: ImageError) -> RuntimeError {
    match error {
        ImageError::Io { context, source } => RuntimeError::Io { context, source },
        other => RuntimeError::Refused(other.to_string()),
    }
}

impl Runtime for ContainerRuntime {
    fn host(&self) -> &ShimHost {
        &self.host
    }

    fn driver(&self) -> RuntimeDriver {
        RuntimeDriver::Libcontainer
    }

    async fn allocate(&self, request: &SessionRequest) -> Result<RuntimeRef, RuntimeError> {
        let span = tracing::info_span!(
            "allocate",
            session_id = %request.session_id,
            tenant = %request.tenant,
            driver = "libcontainer"
        );
        async move {
            if request.network {
                return Err(RuntimeError::Refused(
                    "container networking is not available on this node; use a profile without network"
                        .into(),
                ));
            }
            let ready = self.prepare_image(request).await?;
            tracing::debug!("image ready");
            let image = &ready.image;
            let dir = self.host.create_dir(request.session_id)?;
            // The shim forks and sets itself up while the bundle is written.
            let early = self.host.fork_early(&dir);
            let result = async {
                let session = request.session_id.to_string();
                let mut run = image.config.clone();
                if let Some(command) = &request.command {
                    run.argv = command.clone();
                }
                let cgroups = self.cgroups_path(request.session_id);
                let spec = bundle::spec(&BundleParams {
                    rootfs: &image.rootfs,
                    run: &run,
                    passwd: &ready.passwd,
                    group: &ready.group,
                    limits: request.limits,
                    session: &session,
                    cgroups_path: &cgroups,
                    size: TermSize::new(80, 24).expect("80x24 is in range"),
                })
                .map_err(|e| RuntimeError::Refused(e.to_string()))?;
                // The session directory is the bundle: one directory fewer to make and remove.
                let bundle_dir = dir.clone();
                spec.save(bundle_dir.join("config.json"))
                    .map_err(|e| RuntimeError::Shim(format!("writing config.json: {e}")))?;
                let id = container_id(request.session_id);
                let runtime_ref = RuntimeRef {
                    driver: RuntimeDriver::Libcontainer,
                    id: id
                        .parse()
                        .map_err(|e| RuntimeError::Refused(format!("{e}")))?,
                };
                let shim_spec = ShimSpec {
                    session_id: request.session_id,
                    size: TermSize::new(80, 24).expect("80x24 is in range"),
                    child: ChildSpec::Container {
                        bundle: bundle_dir,
                        container_id: id,
                        state_root: self.state_root.clone(),
                    },
                };
                let record = SessionRecord {
                    session_id: request.session_id,
                    tenant: request.tenant.clone(),
                    runtime_ref: runtime_ref.clone(),
                    limits: request.limits,
                    started_at: crate::clock::now(),
                };
                tracing::debug!(early = early.is_some(), "bundle written");
                self.host.start(&record, &shim_spec, early).await?;
                Ok(runtime_ref)
            }
            .await;
            match &result {
                Ok(_) => tracing::info!(image = %image.digest, "container started"),
                Err(_) => {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn enforce_limits(&self, session_id: SessionId) -> Result<LimitsReport, RuntimeError> {
        let record = self.host.record(session_id)?;
        let (applied, usage) = self
            .cgroups
            .read(&self.cgroups_path(session_id))
            .map_err(RuntimeError::io("reading the session's cgroup"))?;
        let wanted = record.limits;
        let mut mismatches = Vec::new();
        let mut check = |limit, wanted: u64, found: u64| {
            if wanted != found {
                mismatches.push(LimitMismatch {
                    limit,
                    wanted,
                    found,
                });
            }
        };
        check(
            LimitKind::Cpu,
            wanted.cpu_millis.into(),
            applied.cpu_millis.into(),
        );
        check(LimitKind::Memory, wanted.memory_bytes, applied.memory_bytes);
        check(LimitKind::Pids, wanted.pids.into(), applied.pids.into());
        Ok(LimitsReport {
            applied,
            mismatches,
            usage: Some(usage),
        })
    }
}
