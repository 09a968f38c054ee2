//! What both fogshell binaries set up alike: logging (`tracing` to stderr, as text for people or
//! JSON for collectors, filtered by `RUST_LOG`, default `info`) and the build facts their CLIs
//! report. It lives apart from `fogshell-shared`, which does no I/O; OpenTelemetry export is
//! added here as one more layer.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use fogshell_shared::wire::{BuildInfo, SUPPORTED_VERSIONS};

/// Command-line options every fogshell binary takes (flatten into its clap parser).
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// `--version` text: the release and the wire protocol range, so two builds can be compared.
pub fn long_version(release: &str) -> String {
    format!(
        "{release} (wire protocol {}..={})",
        SUPPORTED_VERSIONS.min, SUPPORTED_VERSIONS.max
    )
}

/// The `info` subcommand: prints this build's [`BuildInfo`] as JSON on stdout.
pub fn print_build_info(name: &str, release: &str) -> ExitCode {
    let info = BuildInfo::new(name, release, std::env::consts::ARCH);
    tracing::debug!(version = %info.version, arch = ?info.arch, "reporting build info");
    print_json(&info)
}

/// How log lines look on stderr.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Prints `value` as one line of JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> ExitCode {
    match serde_json::to_string(value) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "could not encode output");
            ExitCode::FAILURE
        }
    }
}
