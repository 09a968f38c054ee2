//! Logging both fogshell binaries set up alike: `tracing` to stderr, as text for people or JSON
//! for collectors. Filter with `RUST_LOG` (default `info`). It lives apart from `fogshell-shared`,
//! which does no I/O; OpenTelemetry export is added here as one more layer.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

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
