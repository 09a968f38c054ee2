//! `fogshell-agent`: the node agent's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use std::sync::Arc;

use fogshell_agent::image::ImageStore;
use fogshell_agent::image::registry::{RegistryClient, RegistryConfig};
use fogshell_agent::runtime::container::ContainerRuntime;
use fogshell_agent::runtime::process::{self, ProcessRuntime};
use fogshell_agent::runtime::{SessionRequest, ShimHost};
use fogshell_shared::{ImageRef, ResourceLimits, SessionId, TrustTier};
use fogshell_telemetry::LogArgs;

/// The fogshell node agent: runs session containers on this node for a fogshell coordinator.
#[derive(Debug, Parser)]
#[command(name = "fogshell-agent", version = fogshell_telemetry::long_version(env!("CARGO_PKG_VERSION")), about)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print what this build speaks (release, wire protocol range, ALPN, architecture) as JSON.
    Info,
    /// Run a shell on this node in the current terminal, with no coordinator, then remove it:
    /// an operator's check that the node can run sessions.
    Run {
        /// Where the agent keeps session state.
        #[arg(long, default_value = "/var/lib/fogshell-agent")]
        state_dir: PathBuf,
        /// How to run the shell: a container (needs root), or a host shell without isolation.
        #[arg(long, value_enum, default_value_t = Driver::Libcontainer)]
        driver: Driver,
        /// Import the image from this OCI image-layout directory (`images/build.sh` makes one).
        #[arg(long, conflicts_with = "image")]
        image_layout: Option<PathBuf>,
        /// With --image-layout: which image of the layout (its `ref.name`); the only one if unset.
        #[arg(long, requires = "image_layout")]
        image_name: Option<String>,
        /// An image pinned by digest (`registry/repository@sha256:…`), pulled unless the
        /// store has it.
        #[arg(long)]
        image: Option<ImageRef>,
        /// A registry (`host:port`) to reach over plain HTTP; repeat for several.
        #[arg(long = "insecure-registry")]
        insecure_registries: Vec<String>,
    },
    /// Internal: supervise one session's shell (started by the agent itself).
    #[command(hide = true)]
    Shim {
        /// The session's directory.
        #[arg(long)]
        dir: PathBuf,
        /// Instead of running a session, clean up after one whose shim died.
        #[arg(long)]
        delete: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Driver {
    /// An OCI container through libcontainer, with the default profile's limits.
    Libcontainer,
    /// A host shell on a PTY: no isolation, no limits, trust tier `dev`.
    Process,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    fogshell_telemetry::init(cli.log.log_format);
    match cli.command {
        Command::Info => {
            fogshell_telemetry::print_build_info(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
        }
        // The shim must stay single-threaded until its shell runs: no tokio here.
        Command::Shim { dir, delete } => match if delete {
            fogshell_agent::shim::delete(&dir)
        } else {
            fogshell_agent::shim::run(&dir)
        } {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!("{error}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            state_dir,
            driver,
            image_layout,
            image_name,
            image,
            insecure_registries,
        } => run_here(
            state_dir,
            driver,
            image_layout,
            image_name,
            image,
            insecure_registries,
        ),
    }
}

fn run_here(
    state_dir: PathBuf,
    driver: Driver,
    image_layout: Option<PathBuf>,
    image_name: Option<String>,
    image: Option<ImageRef>,
    insecure_registries: Vec<String>,
) -> ExitCode {
    let result = (|| {
        let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio: {e}"))?;
        let shim_exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
        let host = ShimHost::new(&state_dir, shim_exe).map_err(|e| e.to_string())?;
        // Sessions left by an earlier run that crashed are cleaned up first.
        runtime
            .block_on(host.reap_dead())
            .map_err(|e| e.to_string())?;
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(|e| format!("randomness: {e}"))?;
        let mut request = SessionRequest {
            session_id: SessionId::from_random_bytes(random),
            tenant: "local".parse().map_err(|e| format!("{e}"))?,
            profile: "default".parse().map_err(|e| format!("{e}"))?,
            limits: ResourceLimits::DEFAULT,
            network: false,
            trust_tier: process::TRUST_TIER,
            image_ref: None,
        };
        let span = tracing::info_span!("run", session_id = %request.session_id);
        let _entered = span.enter();
        match driver {
            Driver::Process => {
                let runtime_impl = ProcessRuntime::new(host, ProcessRuntime::default_shell());
                runtime
                    .block_on(fogshell_agent::run::run(&runtime_impl, request))
                    .map_err(|e| e.to_string())
            }
            Driver::Libcontainer => {
                if !nix::unistd::Uid::effective().is_root() {
                    return Err(
                        "the libcontainer driver needs root (or use --driver process)".into(),
                    );
                }
                let images = Arc::new(
                    ImageStore::new(&state_dir.join("images")).map_err(|e| e.to_string())?,
                );
                request.image_ref = Some(match (image_layout, image) {
                    (Some(layout), _) => {
                        let digest = images
                            .import_layout(&layout, image_name.as_deref())
                            .map_err(|e| e.to_string())?;
                        ImageRef::pinned(None, "local/imported", digest)
                            .map_err(|e| e.to_string())?
                    }
                    (None, Some(image)) => image,
                    (None, None) => {
                        return Err(
                            "name an image: --image-layout DIR or --image REF@sha256:…".into()
                        );
                    }
                });
                request.trust_tier = TrustTier::Unattested;
                let registry = RegistryClient::new(&RegistryConfig {
                    insecure: insecure_registries,
                });
                let runtime_impl = ContainerRuntime::new(host, images, Some(registry), &state_dir);
                runtime
                    .block_on(fogshell_agent::run::run(&runtime_impl, request))
                    .map_err(|e| e.to_string())
            }
        }
    })();
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("fogshell-agent run: {error}");
            ExitCode::FAILURE
        }
    }
}
