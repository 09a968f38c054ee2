//! `fogshell-coordinator`: the control plane's command line.

mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fogshell_coordinator::api::rate_limit::RateLimit;
use fogshell_coordinator::auth::oidc::OidcConfig;
use fogshell_coordinator::control::{ImagePolicy, PlacementPolicy};
use fogshell_coordinator::join_tokens::TokenStore;
use fogshell_coordinator::pki::CertificateAuthority;
use fogshell_shared::ImageRef;
use fogshell_shared::Timestamp;
use fogshell_shared::profile::Profiles;
use fogshell_telemetry::LogArgs;

/// The fogshell coordinator: API, fleet, placement, PTY gateway and audit for fogshell nodes.
#[derive(Debug, Parser)]
#[command(name = "fogshell-coordinator", version = fogshell_telemetry::long_version(env!("CARGO_PKG_VERSION")), about)]
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
    /// Prepare the data directory: make the coordinator's certificate authority unless there
    /// is one, and print the hash agents pin it by.
    Init {
        #[command(flatten)]
        data: DataDir,
    },
    /// Manage join tokens, with which new nodes enroll.
    #[command(subcommand)]
    JoinToken(JoinTokenCommand),
    /// Run the coordinator: the agents' QUIC endpoint and the HTTP API with the PTY gateway.
    /// Runs until interrupted.
    Serve(Box<ServeArgs>),
    /// The all-in-one development stack: a coordinator on loopback with SQLite, the default
    /// image, a local agent it starts itself, and a built-in development OIDC issuer.
    Up(UpArgs),
    /// Open a shell: log in, create a session and attach this terminal to it, like `ssh`.
    Shell(ShellArgs),
    /// Log in (authorization code + PKCE) and print the access token, for API clients:
    /// `TOKEN=$(fogshell-coordinator login)`.
    Login {
        /// The coordinator's API.
        #[arg(long, env = "FOGSHELL_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// A CA certificate (PEM) to trust for the API [default: the system's roots].
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Issue a TLS certificate from the coordinator's CA for a node's edge gateway (clients
    /// that trust the CA — `shell --ca`, a managed browser — then trust the gateway): writes
    /// `gateway.crt` (with the CA) and `gateway.key` for the agent's `[gateway]` section.
    GatewayCert(GatewayCertArgs),
    /// TPM attestation: reference PCR values, pinned keys.
    #[command(subcommand)]
    Attestation(AttestationCommand),
    /// Image signing and verification, cosign-compatible and offline: key pairs, signatures,
    /// attestations (provenance, SBOM), and the admission check.
    #[command(subcommand)]
    Image(fogshell_coordinator::image_cli::ImageCommand),
}

#[derive(Debug, clap::Subcommand)]
enum AttestationCommand {
    /// Record a node's last verified PCR values as the reference it (or its group) is held
    /// to from now on — after a firmware or boot-chain update, say. The running coordinator
    /// uses it at the node's next quote.
    Reference {
        #[command(flatten)]
        data: DataDir,
        /// The node whose last verified quote gives the values.
        #[arg(long)]
        node: fogshell_shared::NodeId,
        /// Record them for this node group (nodes labelled `attestation-group=GROUP`)
        /// instead of for the node alone.
        #[arg(long)]
        group: Option<String>,
    },
    /// Print the pinned keys, last PCR values and references as JSON.
    Show {
        #[command(flatten)]
        data: DataDir,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    data: DataDir,
    /// UDP address for QUIC (agents).
    #[arg(long, default_value = "0.0.0.0:7443")]
    listen: std::net::SocketAddr,
    /// Names agents and clients reach the coordinator by, for its certificates (DNS names or
    /// IPs); repeatable.
    #[arg(long = "name", default_values = ["localhost", "127.0.0.1"])]
    names: Vec<String>,
    /// TCP address for the HTTP API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: std::net::SocketAddr,
    /// TLS certificate chain (PEM) for the HTTP API [default: one from the coordinator's CA].
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for the HTTP API.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve the API over plain HTTP (only allowed on a loopback address).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    plain_http: bool,
    /// How clients reach the API, `https://host:port` [default: the bound address].
    #[arg(long)]
    public_url: Option<String>,
    /// The OIDC issuer URL access tokens come from.
    #[arg(long, required_unless_present = "dev_issuer")]
    oidc_issuer: Option<String>,
    /// The audience access tokens must carry.
    #[arg(long, default_value = "fogshell")]
    oidc_audience: String,
    /// The token claim naming the tenant.
    #[arg(long, default_value = "tenant")]
    tenant_claim: String,
    /// The token claim with space-separated scopes.
    #[arg(long, default_value = "scope")]
    scope_claim: String,
    /// The longest an access token may be valid in all (`exp` − `iat`); longer ones, and
    /// ones issued in the future, are refused.
    #[arg(long, default_value = "24h", value_parser = parse_token_lifetime)]
    max_token_lifetime: std::time::Duration,
    /// Use the built-in development issuer instead (loopback only; never in production).
    #[arg(long, conflicts_with = "oidc_issuer")]
    dev_issuer: bool,
    /// The image sessions run when they name none, pinned: `registry/repo@sha256:…`.
    #[arg(long)]
    default_image: ImageRef,
    /// Development mode: the default image runs unverified and may be named by tag; every
    /// other image is still checked against the admission policy.
    #[arg(long)]
    dev: bool,
    /// The image admission policy (TOML: rules of repositories, trusted cosign keys, required
    /// attestations, allowed builders, SBOM); required unless --dev.
    #[arg(long, value_name = "FILE")]
    admission_policy: Option<PathBuf>,
    /// A registry (`host:port`) whose signatures are read over plain HTTP; repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure_registries: Vec<String>,
    /// Logins for private registries: an auth file as `skopeo login --authfile` or `podman
    /// login` writes (`{"auths": {"host": {"auth": base64(user:password)}}}`).
    #[arg(long, value_name = "FILE", env = "REGISTRY_AUTH_FILE")]
    registry_auth_file: Option<PathBuf>,
    /// How often agents send heartbeats (`500ms`, `1s`).
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    heartbeat_interval: std::time::Duration,
    /// How long node certificates are valid (`30d`); agents renew theirs over the link in
    /// the last third of its life, without dropping a session.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    node_cert_lifetime: std::time::Duration,
    /// A node silent this long is lost and its sessions fail over (`2s`); a shorter silence
    /// only marks it disconnected.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    node_lost_after: std::time::Duration,
    /// How long an attach token opens a terminal (`60s`; 1s to 1h): at the relay and at the
    /// nodes' own gateways, which check it offline.
    #[arg(long, default_value = "60s", value_parser = parse_attach_ttl)]
    attach_token_ttl: std::time::Duration,
    /// How often every running session's limits are read back from its node's cgroups
    /// (the runtime contract's `enforce_limits`); a session whose limits do not hold is ended.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    limits_check_interval: std::time::Duration,
    /// How many viewers one session may have at the relay at once; past it a viewer is
    /// refused (429, `pty.viewer_limit`).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_viewers_per_session: u32,
    /// How many viewers one tenant's sessions may have at the relay at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_viewers_per_tenant: u32,
    /// How long a viewer may stay silent (no message, no answer to the pings sent three
    /// times in that span) before it is dropped and its place given back.
    #[arg(long, default_value = "60s", value_parser = parse_viewer_silence)]
    viewer_silence: std::time::Duration,
    /// The origin (`https://host[:port]`) of a console other than the coordinator's own whose
    /// pages may open terminals; repeatable. Browsers from any other page are refused
    /// (`pty.origin_refused`) at the relay and at the nodes' gateways.
    #[arg(long = "console-origin")]
    console_origins: Vec<String>,
    /// A PEM file of TPM manufacturer CA certificates (issuing intermediates included) that
    /// EK certificates must chain to; repeatable. Without one no node becomes `attested`.
    #[arg(long = "tpm-ca", value_name = "PEM")]
    tpm_cas: Vec<PathBuf>,
    /// The PCRs (SHA-256 bank) quoted and held to their reference: `0-7`, `0,2,4,7`.
    #[arg(long, default_value = "0-7", value_parser = fogshell_coordinator::attestation::parse_pcrs)]
    attestation_pcrs: fogshell_shared::wire::attest::PcrSet,
    /// How often each TPM node is quoted (`30s`); a failed quote takes `attested` away.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    attestation_interval: std::time::Duration,
    /// The scopes the console and `shell` ask the issuer for [default: `openid
    /// fogshell.sessions` with --oidc-issuer, every fogshell scope with the development one].
    #[arg(long)]
    oidc_client_scope: Option<String>,
    /// Session profiles, a TOML file of tables `[NAME]` with `cpu_millis`, `memory_bytes`,
    /// `pids`, and optionally `network`, `min_trust_tier` and `on_trust_loss`; `default` (1 CPU, 512 MiB, 256
    /// pids) is built in unless the file redefines it.
    #[arg(long)]
    profiles: Option<std::path::PathBuf>,
    /// A region-to-region round trip placement assumes for clients that measured none:
    /// `REGION/REGION=MS` (`eu-west/us-east=85`); repeat for more.
    #[arg(long = "region-latency", value_name = "A/B=MS")]
    region_latencies: Vec<String>,
    /// Confines a tenant's sessions to nodes labelled `jurisdiction=JUR`: `TENANT=JUR`;
    /// repeat for more (several for one tenant allow any of them).
    #[arg(long = "tenant-jurisdiction", value_name = "TENANT=JUR")]
    tenant_jurisdictions: Vec<String>,
    /// Requests a tenant may make in a burst.
    #[arg(long, default_value_t = 100)]
    rate_burst: u32,
    /// Requests per second a tenant's budget refills by.
    #[arg(long, default_value_t = 20.0)]
    rate_per_second: f64,
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Where the stack keeps its state [default: $XDG_DATA_HOME/fogshell, or
    /// /var/lib/fogshell as root].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TCP address for the HTTP API and the console (loopback only).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: std::net::SocketAddr,
    /// UDP address for the local agent's link.
    #[arg(long, default_value = "127.0.0.1:7443")]
    quic: std::net::SocketAddr,
    /// The default image, an OCI image layout (`images/build.sh` makes it).
    #[arg(long, default_value = "images/out/default")]
    image_layout: PathBuf,
    /// The agent binary [default: `fogshell-agent` next to this one].
    #[arg(long)]
    agent: Option<PathBuf>,
    /// How the local agent runs shells [default: containers as root, host shells otherwise].
    #[arg(long, value_enum)]
    driver: Option<UpDriver>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum UpDriver {
    /// OCI containers through libcontainer (needs root).
    Libcontainer,
    /// Host shells on a PTY: no isolation (development only).
    Process,
}

#[derive(Debug, clap::Args)]
struct ShellArgs {
    /// The coordinator's API.
    #[arg(long, env = "FOGSHELL_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A CA certificate (PEM) to trust for the API [default: the system's roots].
    #[arg(long)]
    ca: Option<PathBuf>,
    /// An access token to use instead of logging in.
    #[arg(long, env = "FOGSHELL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The session profile.
    #[arg(long, default_value = "default")]
    profile: fogshell_shared::ProfileName,
    /// How long the session may live (`30m`, `8h`).
    #[arg(long, default_value = "1h", value_parser = parse_session_ttl)]
    ttl: u32,
    /// The image, pinned by digest [default: the coordinator's default image].
    #[arg(long)]
    image: Option<ImageRef>,
}

#[derive(Debug, clap::Args)]
struct GatewayCertArgs {
    #[command(flatten)]
    data: DataDir,
    /// The node whose gateway it is.
    #[arg(long)]
    node: fogshell_shared::NodeId,
    /// A DNS name or IP address users reach the gateway by; repeatable.
    #[arg(long = "name", required = true)]
    names: Vec<String>,
    /// Where to write gateway.crt and gateway.key.
    #[arg(long)]
    out_dir: PathBuf,
    /// How long it is valid.
    #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
    valid_for: std::time::Duration,
}

#[derive(Debug, clap::Subcommand)]
enum AuditCommand {
    /// Recompute the audit chain's hashes from the first event to the last.
    Verify {
        #[command(flatten)]
        data: DataDir,
    },
}

#[derive(Debug, clap::Args)]
struct DataDir {
    /// The coordinator's data directory.
    #[arg(long, default_value = "/var/lib/fogshell-coordinator")]
    data_dir: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
enum JoinTokenCommand {
    /// Mint a single-use join token. It is shown once; only its hash is kept.
    Create {
        #[command(flatten)]
        data: DataDir,
        /// How long it stays valid (`30m`, `1h`, `2d`).
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: u32,
        /// What it is for (shown by `list`).
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List join tokens (ids and state, never secrets).
    List {
        #[command(flatten)]
        data: DataDir,
    },
}

/// A lifetime like `90s`, `30m`, `1h`, `2d`, between one minute and 30 days.
fn parse_ttl(text: &str) -> Result<u32, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    let seconds = duration.as_secs();
    if !(60..=30 * 24 * 3600).contains(&seconds) {
        return Err("a join token lives between 1m and 30d".into());
    }
    u32::try_from(seconds).map_err(|e| e.to_string())
}

fn now() -> (time::OffsetDateTime, Timestamp) {
    let now = time::OffsetDateTime::now_utc();
    (now, Timestamp::from_offset_date_time(now))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    fogshell_telemetry::init(cli.log.log_format);
    let result = match cli.command {
        Command::Info => {
            return fogshell_telemetry::print_build_info(
                env!("CARGO_PKG_NAME"),
                env!("CARGO_PKG_VERSION"),
            );
        }
        Command::Init { data } => init(&data.data_dir),
        Command::JoinToken(JoinTokenCommand::Create {
            data,
            ttl,
            description,
        }) => create_token(&data.data_dir, ttl, &description),
        Command::JoinToken(JoinTokenCommand::List { data }) => list_tokens(&data.data_dir),
        Command::Serve(args) => serve(*args),
        Command::Attestation(AttestationCommand::Reference { data, node, group }) => {
            record_reference(&data.data_dir, &node, group)
        }
        Command::Attestation(AttestationCommand::Show { data }) => show_attestation(&data.data_dir),
        Command::Image(command) => fogshell_coordinator::image_cli::run(command),
        Command::Up(args) => up::up(up::Up {
            data_dir: args.data_dir,
            http: args.http,
            quic: args.quic,
            image_layout: args.image_layout,
            agent: args.agent,
            containers: args.driver.map(|d| d == UpDriver::Libcontainer),
        }),
        Command::Shell(args) => match shell(args) {
            Ok(code) => return ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)),
            Err(error) => Err(error),
        },
        Command::Audit(AuditCommand::Verify { data }) => verify_audit(&data.data_dir),
        Command::GatewayCert(args) => gateway_cert(&args),
        Command::Login { url, ca } => login(&url, ca.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fogshell-coordinator: {error}");
            ExitCode::FAILURE
        }
    }
}

fn ensure_data_dir(data_dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|e| format!("creating {}: {e}", data_dir.display()))
}

/// `fogshell-coordinator gateway-cert`.
fn gateway_cert(args: &GatewayCertArgs) -> Result<(), String> {
    use fogshell_shared::files::{Durability, write_atomically};
    ensure_data_dir(&args.data.data_dir)?;
    let ca = CertificateAuthority::load_or_create(&args.data.data_dir, now().0)
        .map_err(|e| e.to_string())?;
    let validity = time::Duration::try_from(args.valid_for).map_err(|e| e.to_string())?;
    let (cert_der, key_der) = ca
        .issue_gateway_certificate(&args.node, &args.names, validity, now().0)
        .map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&args.out_dir)
        .map_err(|e| format!("{}: {e}", args.out_dir.display()))?;
    let chain = format!(
        "{}{}",
        pem::encode(&pem::Pem::new("CERTIFICATE", cert_der)),
        ca.cert_pem()
    );
    let key = pem::encode(&pem::Pem::new("PRIVATE KEY", key_der));
    let (cert_path, key_path) = (
        args.out_dir.join("gateway.crt"),
        args.out_dir.join("gateway.key"),
    );
    write_atomically(&cert_path, chain.as_bytes(), 0o644, Durability::Synced)
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    write_atomically(&key_path, key.as_bytes(), 0o600, Durability::Synced)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    tracing::info!(node_id = %args.node, names = ?args.names, "gateway certificate issued");
    println!("certificate: {}", cert_path.display());
    println!("key:         {}", key_path.display());
    println!("names:       {}", args.names.join(", "));
    println!(
        "valid for:   {}",
        humantime::format_duration(args.valid_for)
    );
    Ok(())
}

fn init(data_dir: &std::path::Path) -> Result<(), String> {
    ensure_data_dir(data_dir)?;
    let ca = CertificateAuthority::load_or_create(data_dir, now().0).map_err(|e| e.to_string())?;
    println!("data directory: {}", data_dir.display());
    println!("ca certificate: {}", data_dir.join("pki/ca.crt").display());
    println!("ca hash:        {}", ca.ca_hash());
    Ok(())
}

fn create_token(data_dir: &std::path::Path, ttl: u32, description: &str) -> Result<(), String> {
    ensure_data_dir(data_dir)?;
    let ca = CertificateAuthority::load_or_create(data_dir, now().0).map_err(|e| e.to_string())?;
    let store = TokenStore::open(data_dir).map_err(|e| e.to_string())?;
    let mut random = [0u8; 30];
    getrandom::fill(&mut random).map_err(|e| format!("randomness: {e}"))?;
    let issued_at = now().1;
    let (token, id) = store
        .mint(random, issued_at, ttl, description)
        .map_err(|e| e.to_string())?;
    tracing::info!(token_id = %id, ttl, "join token minted");
    println!("token:   {}", token.expose());
    println!(
        "expires: {}",
        issued_at.plus_seconds(ttl).unwrap_or(issued_at)
    );
    println!("ca hash: {}", ca.ca_hash());
    Ok(())
}

/// `attestation reference`: the node's last verified PCR values become its (or its group's)
/// reference.
fn record_reference(
    data_dir: &std::path::Path,
    node: &fogshell_shared::NodeId,
    group: Option<String>,
) -> Result<(), String> {
    use fogshell_coordinator::attestation::state::AttestationState;
    let state = AttestationState::open(data_dir)?;
    let record = state.node(node).ok_or_else(|| {
        format!(
            "node {node} has not enrolled its TPM with this coordinator (see `attestation show`)"
        )
    })?;
    let mut references = state.references()?;
    let values = record.last_pcrs;
    let scope = match group {
        Some(group) => {
            references.groups.insert(group.clone(), values.clone());
            format!("group {group}")
        }
        None => {
            references.nodes.insert(node.clone(), values.clone());
            format!("node {node}")
        }
    };
    state.put_references(&references)?;
    println!(
        "recorded {} PCR values of {node} as the reference for {scope}",
        values.len()
    );
    Ok(())
}

/// `attestation show`.
fn show_attestation(data_dir: &std::path::Path) -> Result<(), String> {
    use fogshell_coordinator::attestation::state::AttestationState;
    let state = AttestationState::open(data_dir)?;
    let shown = serde_json::json!({
        "nodes": state.nodes(),
        "references": state.references()?,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&shown).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// `serve --profiles FILE`, or the built-in `default` alone.
fn load_profiles(path: Option<&std::path::Path>) -> Result<Profiles, String> {
    let Some(path) = path else {
        return Profiles::new(Default::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the profiles {}: {e}", path.display()))?;
    let configured =
        toml::from_str(&text).map_err(|e| format!("the profiles {}: {e}", path.display()))?;
    Profiles::new(configured).map_err(|e| format!("the profiles {}: {e}", path.display()))
}

fn serve(args: ServeArgs) -> Result<(), String> {
    use fogshell_coordinator::server::{HttpTls, Identity, ServerConfig};

    let tls = match (args.plain_http, args.tls_cert, args.tls_key) {
        (true, _, _) => HttpTls::Plain,
        (false, Some(cert), Some(key)) => HttpTls::Files { cert, key },
        _ => HttpTls::OwnCa,
    };
    let client_scope = args.oidc_client_scope.unwrap_or_else(|| {
        if args.oidc_issuer.is_some() {
            "openid fogshell.sessions".into()
        } else {
            fogshell_coordinator::auth::dev_issuer::DEV_SCOPES.into()
        }
    });
    let identity = match args.oidc_issuer {
        Some(issuer) => Identity::Oidc(OidcConfig {
            tenant_claim: args.tenant_claim,
            scope_claim: args.scope_claim,
            max_lifetime: args.max_token_lifetime,
            ..OidcConfig::new(issuer, args.oidc_audience)
        }),
        None => Identity::Dev {
            audience: args.oidc_audience,
        },
    };
    let config = ServerConfig {
        data_dir: args.data.data_dir,
        quic_listen: args.listen,
        names: args.names,
        http_listen: args.http,
        tls,
        public_url: args.public_url,
        identity,
        profiles: load_profiles(args.profiles.as_deref())?,
        images: ImagePolicy {
            default_image: args.default_image,
            dev_mode: args.dev,
        },
        rate: RateLimit {
            burst: args.rate_burst.max(1),
            per_second: args.rate_per_second.max(0.01),
        },
        lost_within: args.node_lost_after,
        attach_token_ttl: args.attach_token_ttl,
        limits_check_interval: args
            .limits_check_interval
            .max(std::time::Duration::from_secs(1)),
        viewer_limits: fogshell_gateway::viewers::ViewerLimits {
            per_session: args.max_viewers_per_session as usize,
            per_tenant: args.max_viewers_per_tenant as usize,
        },
        viewer_silence: args.viewer_silence,
        console_origins: args.console_origins,
        heartbeat_interval: args.heartbeat_interval,
        client_scope,
        node_cert_lifetime: time::Duration::try_from(args.node_cert_lifetime)
            .map_err(|e| format!("--node-cert-lifetime: {e}"))?,
        placement: PlacementPolicy::from_flags(&args.region_latencies, &args.tenant_jurisdictions)?,
        attestation: fogshell_coordinator::attestation::AttestationConfig {
            manufacturer_cas: args.tpm_cas,
            pcrs: args.attestation_pcrs,
            interval: args.attestation_interval,
        },
        admission_policy: args.admission_policy,
        insecure_registries: args.insecure_registries,
        registry_auth_file: args.registry_auth_file,
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio: {e}"))?;
    runtime.block_on(async {
        let running = fogshell_coordinator::server::start(config).await?;
        // The lines scripts and tests wait for. Written once, and a reader that stopped
        // listening (a closed pipe) must not bring the coordinator down.
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = write!(
                out,
                "listening on {}\napi on {}\n",
                running.quic_addr, running.public_url
            );
            let _ = out.flush();
        }
        wait_for_signal().await?;
        running.shutdown().await;
        Ok(())
    })
}

/// Waits for SIGINT or SIGTERM.
async fn wait_for_signal() -> Result<(), String> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("watching SIGTERM: {e}"))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
        _ = terminate.recv() => tracing::info!("terminated"),
    }
    Ok(())
}

/// A session lifetime like `30m` or `8h`, within the API's bounds.
fn parse_session_ttl(text: &str) -> Result<u32, String> {
    let seconds = humantime::parse_duration(text)
        .map_err(|e| e.to_string())?
        .as_secs();
    let range = fogshell_shared::api::TTL_SECONDS;
    u32::try_from(seconds)
        .ok()
        .filter(|s| range.contains(s))
        .ok_or_else(|| {
            format!(
                "a session lives between {}s and {}s",
                range.start(),
                range.end()
            )
        })
}

/// `--viewer-silence`: a duration from a second to an hour.
fn parse_viewer_silence(text: &str) -> Result<std::time::Duration, String> {
    let silence = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if !(std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(3600))
        .contains(&silence)
    {
        return Err("a viewer's allowed silence lies between 1s and 1h".into());
    }
    Ok(silence)
}

/// `--max-token-lifetime`: a duration from a minute to thirty days.
fn parse_token_lifetime(text: &str) -> Result<std::time::Duration, String> {
    let lifetime = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if !(std::time::Duration::from_secs(60)..=std::time::Duration::from_secs(30 * 24 * 3600))
        .contains(&lifetime)
    {
        return Err("an access token's lifetime cap lies between 1m and 30d".into());
    }
    Ok(lifetime)
}

/// `--attach-token-ttl`: a duration from a second to an hour.
fn parse_attach_ttl(text: &str) -> Result<std::time::Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if !(std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(3600)).contains(&ttl) {
        return Err("an attach token lives between 1s and 1h".into());
    }
    Ok(ttl)
}

fn shell(args: ShellArgs) -> Result<i32, String> {
    use fogshell_coordinator::client::Client;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio: {e}"))?;
    let result = runtime.block_on(async {
        let client = Client::new(&args.url, args.ca.as_deref())?;
        let token = match args.token {
            Some(token) => fogshell_shared::Secret::new(token),
            None => client.login().await?,
        };
        // Placed by the real path: round trips to the relay and the nodes' gateways.
        let measured = client.measure_gateways(&token).await;
        let nearest = measured.as_ref().and_then(|m| m.nearest_gateway.clone());
        let request = fogshell_shared::api::CreateSessionRequest {
            profile: args.profile,
            ttl_seconds: args.ttl,
            placement_hint: measured.map(|m| m.hint),
            image_ref: args.image,
        };
        // The nearest gateway's transport opens while the session is created.
        let preconnect = async {
            match &nearest {
                Some(url) => client.preconnect(url).await.ok(),
                None => None,
            }
        };
        let (created, warm) = tokio::join!(client.create_session(&token, &request), preconnect);
        let created = created?;
        eprintln!(
            "[fogshell: session {} on {} ({}, {})]",
            created.session_id,
            created.placement.node_id,
            created.placement.region,
            created.placement.trust_tier
        );
        client
            .attach_here(&token, created.session_id, &created.attach, warm)
            .await
    });
    // A read of the terminal may still be pending on tokio's blocking pool; it must not
    // hold the exit until the user presses a key.
    runtime.shutdown_background();
    result
}

fn login(url: &str, ca: Option<&std::path::Path>) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio: {e}"))?;
    let token = runtime.block_on(async {
        fogshell_coordinator::client::Client::new(url, ca)?
            .login()
            .await
    })?;
    println!("{}", token.expose());
    Ok(())
}

fn verify_audit(data_dir: &std::path::Path) -> Result<(), String> {
    use fogshell_coordinator::store::sqlite::SqliteStore;
    use fogshell_shared::audit::{ChainHash, verify_chain};
    let path = data_dir.join("fogshell.db");
    if !path.exists() {
        return Err(format!("{} does not exist", path.display()));
    }
    let store = SqliteStore::open(&path).map_err(|e| e.to_string())?;
    let mut prev = (0, ChainHash::GENESIS);
    store.for_each_event(|record| {
        prev = verify_chain([record], prev).map_err(|e| e.to_string())?;
        Ok(())
    })?;
    println!("audit chain verified: {} events, head {}", prev.0, prev.1);
    Ok(())
}

fn list_tokens(data_dir: &std::path::Path) -> Result<(), String> {
    let store = TokenStore::open(data_dir).map_err(|e| e.to_string())?;
    let at = now().1;
    println!("{:<8} {:<9} {:<26} DESCRIPTION", "ID", "STATE", "EXPIRES");
    for (id, record) in store.list().map_err(|e| e.to_string())? {
        let state = match (record.used_at, at >= record.expires_at) {
            (Some(_), _) => "used",
            (None, true) => "expired",
            (None, false) => "valid",
        };
        println!(
            "{id:<8} {state:<9} {:<26} {}",
            record.expires_at.to_string(),
            record.description
        );
    }
    Ok(())
}
