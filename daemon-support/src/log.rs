//! How the binaries log: [`tracing`] events to stderr, filtered
//! by a per-binary environment variable (`TRIGGER_DB_LOG=debug`, the
//! `RUST_LOG` syntax), written either as text or as JSON lines
//! ([`LogFormat`], from `--log-format` or the binary's `*_LOG_FORMAT`
//! variable). Text carries ANSI colour only when stderr is a terminal, so
//! journald and log files get plain lines.
//!
//! It does not rotate, ship or buffer logs: stderr goes wherever the
//! service manager sends it.
//!
//! [`tracing`]: https://docs.rs/tracing

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// The shape of each log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colour on a terminal only).
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, fields, spans.
    Json,
}

/// Installs the global subscriber: filter from `filter_var` (else
/// `default_filter`), lines in `format`, to stderr. An unparsable filter
/// falls back to the default and says so on stderr.
pub fn init(filter_var: &str, default_filter: &str, format: LogFormat) {
    let filter = match std::env::var(filter_var) {
        Ok(v) => EnvFilter::try_new(&v).unwrap_or_else(|e| {
            eprintln!("{filter_var}={v:?} is not a log filter ({e}); using {default_filter:?}");
            EnvFilter::new(default_filter)
        }),
        Err(_) => EnvFilter::new(default_filter),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}
