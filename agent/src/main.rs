//! `fogshell-agent`: the node agent's command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use fogshell_agent::config::AgentConfig;
use fogshell_agent::image::ImageStore;
use fogshell_agent::image::registry::RegistryClient;
use fogshell_agent::runtime::container::ContainerRuntime;
use fogshell_agent::runtime::process::{self, ProcessRuntime};
use fogshell_agent::runtime::{SessionRequest, ShimHost};
use fogshell_shared::{ImageRef, ProfileName, SessionId, TrustTier};
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
    Run(Box<RunArgs>),
    /// Enroll this node with a coordinator: pin its CA, redeem a join token, store the node
    /// certificate.
    Join(JoinArgs),
    /// Run as the node's agent: keep the link to the coordinator up and report the node.
    Serve(ServeArgs),
    /// Internal: supervise one session's shell (started by the agent itself).
    #[command(hide = true)]
    Shim {
        /// The session's directory (with --zygote: the sessions directory).
        #[arg(long)]
        dir: PathBuf,
        /// Instead of running a session, clean up after one whose shim died.
        #[arg(long)]
        delete: bool,
        /// Fork a shim for each session the agent names on stdin (a Unix socket).
        #[arg(long, conflicts_with = "delete")]
        zygote: bool,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The agent's configuration file [default: /etc/fogshell/agent.toml if it exists].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the agent keeps its state [default: the config's state_dir].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The coordinator's QUIC endpoint, `host:port` [default: the config's node.coordinator].
    #[arg(long)]
    coordinator: Option<String>,
    /// Import images from this OCI image-layout directory before serving, so sessions can
    /// start without a registry (the all-in-one stack's default image); repeatable.
    #[arg(long = "image-layout")]
    image_layouts: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct JoinArgs {
    /// The coordinator's QUIC endpoint, `host:port`.
    #[arg(long)]
    coordinator: String,
    /// The join token (`fogshell-coordinator join-token create` prints it).
    #[arg(long, env = "FOGSHELL_JOIN_TOKEN", hide_env_values = true)]
    token: String,
    /// The coordinator CA's key hash, `sha256:…` (`fogshell-coordinator init` prints it).
    #[arg(long)]
    ca_hash: String,
    /// This node's id (lowercase letters, digits, '-'); it becomes its certificate's name.
    #[arg(long)]
    node_id: fogshell_shared::NodeId,
    /// The agent's configuration file [default: /etc/fogshell/agent.toml if it exists].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the agent keeps its state [default: the config's state_dir].
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The agent's configuration file [default: /etc/fogshell/agent.toml if it exists].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the agent keeps session state [default: the config's state_dir].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The session profile whose limits the shell gets.
    #[arg(long, default_value = "default")]
    profile: ProfileName,
    /// How to run the shell: a container (needs root), or a host shell without isolation.
    #[arg(long, value_enum, default_value_t = Driver::Libcontainer)]
    driver: Driver,
    /// Import the image from this OCI image-layout directory (`images/build.sh` makes one).
    #[arg(long, conflicts_with = "image")]
    image_layout: Option<PathBuf>,
    /// With --image-layout: which image of the layout (its `ref.name`); the only one if unset.
    #[arg(long, requires = "image_layout")]
    image_name: Option<String>,
    /// An image pinned by digest (`registry/repository@sha256:…`), pulled unless the store
    /// has it.
    #[arg(long)]
    image: Option<ImageRef>,
    /// A registry (`host:port`) to reach over plain HTTP, on top of the config's; repeatable.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// Registry logins (an auth file as `skopeo login --authfile` writes), instead of the
    /// config's `[registries] auth_file`.
    #[arg(long, value_name = "FILE", env = "REGISTRY_AUTH_FILE")]
    registry_auth_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Driver {
    /// An OCI container through libcontainer, with the profile's limits.
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
        Command::Shim {
            dir,
            delete,
            zygote,
        } => {
            let result = if delete {
                fogshell_agent::shim::delete(&dir)
            } else if zygote {
                fogshell_agent::shim::zygote::run_zygote(&dir)
            } else {
                fogshell_agent::shim::run(&dir)
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Join(args) => match join(args) {
            Ok(paths) => {
                println!("joined: certificate in {}", paths.certificate.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("fogshell-agent join: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(args) => match serve(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!("{error}");
                eprintln!("fogshell-agent serve: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => match run_here(args) {
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(error) => {
                eprintln!("fogshell-agent run: {error}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `fogshell-agent serve`.
fn serve(args: ServeArgs) -> Result<(), String> {
    use fogshell_agent::serve::{AgentReport, node_id_from_certificate, serve};

    let config = AgentConfig::load(args.config.as_deref())?;
    let state_dir = args.state_dir.unwrap_or(config.state_dir.clone());
    let coordinator = args
        .coordinator
        .or(config.node.coordinator.clone())
        .ok_or("name the coordinator: --coordinator host:port or node.coordinator in the config")?;
    let identity = fogshell_agent::enroll::IdentityPaths::under(&state_dir);
    let node_id = node_id_from_certificate(&identity.certificate)?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio: {e}"))?;
    let shim_exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let host = ShimHost::new(&state_dir, shim_exe).map_err(|e| e.to_string())?;
    match config.node.driver {
        fogshell_shared::RuntimeDriver::Process => {
            let driver = ProcessRuntime::new(host, ProcessRuntime::default_shell());
            let report = AgentReport::new(node_id, &config, &state_dir, driver)?;
            runtime.block_on(serve(std::sync::Arc::new(report), &identity, &coordinator))
        }
        fogshell_shared::RuntimeDriver::Libcontainer => {
            if !nix::unistd::Uid::effective().is_root() {
                return Err("the libcontainer driver needs root (node.driver = \"process\" for development)".into());
            }
            let images =
                Arc::new(ImageStore::new(&state_dir.join("images")).map_err(|e| e.to_string())?);
            for layout in &args.image_layouts {
                let digest = images
                    .import_layout(layout, None)
                    .map_err(|e| format!("importing {}: {e}", layout.display()))?;
                tracing::info!(layout = %layout.display(), %digest, "image imported");
            }
            let registry = RegistryClient::new(&config.registries);
            let driver = ContainerRuntime::new(host, images, Some(registry), &state_dir)
                .in_cgroup(format!("/fogshell/{node_id}"));
            let report = AgentReport::new(node_id, &config, &state_dir, driver)?;
            runtime.block_on(serve(std::sync::Arc::new(report), &identity, &coordinator))
        }
    }
}

/// `fogshell-agent join`.
fn join(args: JoinArgs) -> Result<fogshell_agent::enroll::IdentityPaths, String> {
    let config = AgentConfig::load(args.config.as_deref())?;
    let state_dir = args.state_dir.unwrap_or(config.state_dir);
    let (host, _) = args
        .coordinator
        .rsplit_once(':')
        .ok_or("--coordinator must be host:port")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio: {e}"))?;
    runtime.block_on(async {
        let address = tokio::net::lookup_host(&args.coordinator)
            .await
            .map_err(|e| format!("resolving {}: {e}", args.coordinator))?
            .next()
            .ok_or_else(|| format!("{} resolves to no address", args.coordinator))?;
        fogshell_agent::enroll::join(
            address,
            &host,
            fogshell_shared::Secret::new(args.token),
            &args.ca_hash,
            args.node_id,
            &state_dir,
        )
        .await
        .map_err(|e| e.to_string())
    })
}

/// `fogshell-agent run`: returns the shell's exit status.
fn run_here(args: Box<RunArgs>) -> Result<i32, String> {
    let mut config = AgentConfig::load(args.config.as_deref())?;
    let state_dir = args.state_dir.unwrap_or(config.state_dir.clone());
    config.registries.insecure.extend(args.insecure_registries);
    if let Some(file) = &args.registry_auth_file {
        config.registries.credentials = fogshell_supply::credentials::Credentials::load(file)?;
    }
    let profile = config.profiles.get(&args.profile).cloned().ok_or_else(|| {
        let known: Vec<_> = config.profiles.iter().map(|(n, _)| n.to_string()).collect();
        format!("no profile {} (known: {})", args.profile, known.join(", "))
    })?;

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
        profile: args.profile,
        limits: profile.limits(),
        network: profile.network,
        trust_tier: process::TRUST_TIER,
        image_ref: None,
        command: None,
    };
    let span = tracing::info_span!("run", session_id = %request.session_id);
    let _entered = span.enter();
    let result = match args.driver {
        Driver::Process => {
            let driver = ProcessRuntime::new(host, ProcessRuntime::default_shell());
            runtime
                .block_on(fogshell_agent::run::run(&driver, request))
                .map_err(|e| e.to_string())
        }
        Driver::Libcontainer => {
            if !nix::unistd::Uid::effective().is_root() {
                return Err("the libcontainer driver needs root (or use --driver process)".into());
            }
            let images =
                Arc::new(ImageStore::new(&state_dir.join("images")).map_err(|e| e.to_string())?);
            request.image_ref = Some(match (args.image_layout, args.image) {
                (Some(layout), _) => {
                    let digest = images
                        .import_layout(&layout, args.image_name.as_deref())
                        .map_err(|e| e.to_string())?;
                    ImageRef::pinned(None, "local/imported", digest).map_err(|e| e.to_string())?
                }
                (None, Some(image)) => image,
                (None, None) => {
                    return Err("name an image: --image-layout DIR or --image REF@sha256:…".into());
                }
            });
            request.trust_tier = TrustTier::Unattested;
            let registry = RegistryClient::new(&config.registries);
            let driver = ContainerRuntime::new(host, images, Some(registry), &state_dir);
            runtime
                .block_on(fogshell_agent::run::run(&driver, request))
                .map_err(|e| e.to_string())
        }
    };
    // A read of the terminal may still be pending on tokio's blocking pool; it must not hold
    // the exit until the operator presses a key.
    runtime.shutdown_background();
    result
}
