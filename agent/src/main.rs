//! `fogshell-agent`: the node agent.
//!
//! This first cut knows what it is (release, wire protocol range, ALPN, architecture) and sets
//! up structured logging; the runtime, the QUIC link and enrollment arrive as their own modules.

use std::process::ExitCode;

use clap::Parser;
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
