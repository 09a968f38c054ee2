//! `fogshell-coordinator`: the control plane.
//!
//! This first cut knows what it is (release, wire protocol range, ALPN, architecture) and sets
//! up structured logging; the API, the fleet link, placement and audit arrive as their own modules.

use std::process::ExitCode;

use clap::Parser;
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    fogshell_telemetry::init(cli.log.log_format);
    match cli.command {
        Command::Info => {
            fogshell_telemetry::print_build_info(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
        }
    }
}
