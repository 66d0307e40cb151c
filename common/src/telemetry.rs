//! Logging set-up shared by every binary.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logs to stderr; the level comes from `JETMAIL_LOG` (then `RUST_LOG`), `info` by default.
/// `JETMAIL_LOG_FORMAT=json` switches to one JSON object per line. Colours only on a terminal
/// (and without `NO_COLOR`): a log file, `docker compose logs` or journald gets plain text.
pub fn init_tracing() {
    init_tracing_with_default("info")
}

/// As [`init_tracing`], with another default level (a CLI command prints its own summary and
/// logs only warnings unless asked).
pub fn init_tracing_with_default(default_level: &str) {
    let filter = std::env::var("JETMAIL_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| default_level.into());
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if std::env::var("JETMAIL_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
