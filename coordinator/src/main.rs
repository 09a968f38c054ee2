//! `fogshell-coordinator`: the control plane.
//!
//! This first cut knows what it is (release, wire protocol range, ALPN, architecture) and sets
//! up structured logging; the API, the fleet link, placement and audit arrive as their own modules.

use std::process::ExitCode;

use clap::Parser;
use fogshell_shared::wire::{BuildInfo, SUPPORTED_VERSIONS};

/// The fogshell coordinator: API, fleet, placement, PTY gateway and audit for fogshell nodes.
#[derive(Debug, Parser)]
#[command(name = "fogshell-coordinator", version = long_version(), about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = fogshell_telemetry::LogFormat::Text, global = true)]
    log_format: fogshell_telemetry::LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print what this build speaks (release, wire protocol range, ALPN, architecture) as JSON.
    Info,
}

fn long_version() -> String {
    format!(
        "{} (wire protocol {}..={})",
        env!("CARGO_PKG_VERSION"),
        SUPPORTED_VERSIONS.min,
        SUPPORTED_VERSIONS.max
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    fogshell_telemetry::init(cli.log_format);
    match cli.command {
        Command::Info => {
            let info = BuildInfo::new(
                env!("CARGO_PKG_NAME"),
                env!("CARGO_PKG_VERSION"),
                std::env::consts::ARCH,
            );
            tracing::debug!(version = %info.version, arch = ?info.arch, "reporting build info");
            fogshell_telemetry::print_json(&info)
        }
    }
}
