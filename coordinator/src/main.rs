//! `fogshell-coordinator`: the control plane's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fogshell_coordinator::join_tokens::TokenStore;
use fogshell_coordinator::pki::CertificateAuthority;
use fogshell_shared::Timestamp;
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
    /// Serve the QUIC endpoint agents enroll through (the agent link, the API and the console
    /// are still to come). Runs until interrupted.
    Serve {
        #[command(flatten)]
        data: DataDir,
        /// UDP address for QUIC.
        #[arg(long, default_value = "0.0.0.0:7443")]
        listen: std::net::SocketAddr,
        /// Names agents reach the coordinator by, for its certificate (DNS names or IPs);
        /// repeatable.
        #[arg(long = "name", default_values = ["localhost", "127.0.0.1"])]
        names: Vec<String>,
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
    let millis = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    (
        now,
        Timestamp::from_unix_millis(millis).unwrap_or(Timestamp::UNIX_EPOCH),
    )
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
        Command::Serve {
            data,
            listen,
            names,
        } => serve(&data.data_dir, listen, &names),
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

fn serve(
    data_dir: &std::path::Path,
    listen: std::net::SocketAddr,
    names: &[String],
) -> Result<(), String> {
    use fogshell_coordinator::fabric;
    use std::sync::Arc;

    ensure_data_dir(data_dir)?;
    let ca = Arc::new(
        CertificateAuthority::load_or_create(data_dir, now().0).map_err(|e| e.to_string())?,
    );
    let tokens = TokenStore::open(data_dir).map_err(|e| e.to_string())?;
    let config = fabric::server_config(&ca, names, now().0)?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio: {e}"))?;
    runtime.block_on(async {
        let endpoint =
            fabric::bind(listen, config).map_err(|e| format!("binding {listen}: {e}"))?;
        let local = endpoint.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(%local, ca_hash = %ca.ca_hash(), "serving enrollment");
        // The one line scripts and tests wait for.
        println!("listening on {local}");
        let enrollment = Arc::new(fabric::enroll::Enrollment {
            ca: Arc::clone(&ca),
            tokens,
        });
        let fleet = Arc::new(fogshell_coordinator::fleet::Fleet::new(
            std::time::Duration::from_secs(2),
        ));
        let sweeper = tokio::spawn(fabric::link::sweep_forever(Arc::clone(&fleet)));
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(|e| format!("watching SIGTERM: {e}"))?;
        tokio::select! {
            () = fabric::serve(endpoint.clone(), enrollment, fleet) => {}
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
            _ = terminate.recv() => tracing::info!("terminated"),
        }
        sweeper.abort();
        endpoint.close(0u32.into(), b"coordinator stopping");
        endpoint.wait_idle().await;
        Ok(())
    })
}

fn list_tokens(data_dir: &std::path::Path) -> Result<(), String> {
    let store = TokenStore::open(data_dir).map_err(|e| e.to_string())?;
    let at = now().1;
    println!("{:<8} {:<9} {:<26} DESCRIPTION", "ID", "STATE", "EXPIRES");
    for (id, record) in store.list() {
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
