//! Logging set-up: `tracing` to standard error, filtered by `MREG_LOG`, as text or JSON
//! (`MREG_LOG_FORMAT`).

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Libraries whose `info` lines are chatter in a gateway's log (rmcp writes several per MCP
/// call; sqlx a line per migration): at `warn` unless the filter names them.
const QUIET_LIBRARIES: [&str; 3] = ["rmcp", "sqlx", "hyper_util"];

/// The filter for `MREG_LOG`: a bare level keeps the libraries above at `warn`.
fn directives(filter: &str) -> String {
    let filter = filter.trim();
    let bare = !filter.contains(['=', ',', '[']);
    let quiet = bare
        && matches!(
            filter.to_ascii_lowercase().as_str(),
            "info" | "warn" | "error"
        );
    if !quiet {
        return filter.to_owned();
    }
    let mut out = filter.to_owned();
    for library in QUIET_LIBRARIES {
        out.push_str(&format!(",{library}=warn"));
    }
    out
}

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
/// Colours only when standard error is a terminal.
pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_new(directives(&log.filter))
        .unwrap_or_else(|_| EnvFilter::new(directives("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::directives;

    #[test]
    fn a_bare_level_keeps_library_chatter_at_warn() {
        assert_eq!(
            directives("info"),
            "info,rmcp=warn,sqlx=warn,hyper_util=warn"
        );
        assert_eq!(
            directives("debug"),
            "debug",
            "asking for debug gets everything"
        );
        assert_eq!(
            directives("info,rmcp=info"),
            "info,rmcp=info",
            "an explicit filter is kept"
        );
    }
}
