//! Logging set-up: `tracing` to standard error, filtered by `MREG_LOG`, as text or JSON
//! (`MREG_LOG_FORMAT`).

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Libraries whose `info` lines are chatter in a gateway's log (rmcp writes several per MCP
/// call; sqlx a line per migration): at `warn` unless the filter names them.
const QUIET_LIBRARIES: [&str; 3] = ["rmcp", "sqlx", "hyper_util"];

/// Libraries that write what passes through them at `debug`: rmcp logs each MCP message whole,
/// tool arguments and results included, which the audit log redacts (upstream credentials,
/// tokens, passwords). At `info` unless the filter names them.
const PAYLOAD_LIBRARIES: [&str; 1] = ["rmcp"];

/// Log targets that quote what they were given, secrets included, and are kept at `error`
/// unless the filter names them: sqlx's parser of PostgreSQL URLs warns of each parameter it does
/// not know with its value (`?sslpassword=…`, `?PASSWORD=…`).
const ECHOING_TARGETS: [&str; 1] = ["sqlx_postgres::options"];

/// The filter for `MREG_LOG`: a bare level keeps the chatty libraries above at `warn`; a
/// default level of `debug` or `trace` keeps the libraries that log payloads at `info`, unless
/// the filter names them (`debug,rmcp=debug` asks for the payloads, secrets and all).
fn directives(filter: &str) -> String {
    let filter = filter.trim();
    let parts: Vec<&str> = filter.split(',').map(str::trim).collect();
    let level = parts
        .iter()
        .find(|p| !p.is_empty() && !p.contains(['=', '[']))
        .map(|p| p.to_ascii_lowercase());
    let names = |library: &str| {
        parts.iter().any(|p| {
            p.strip_prefix(library)
                .is_some_and(|rest| rest.starts_with(['=', ':', '[']))
        })
    };
    let mut out = filter.to_owned();
    let bare = parts.len() == 1 && level.is_some();
    if bare && matches!(level.as_deref(), Some("info" | "warn" | "error")) {
        for library in QUIET_LIBRARIES {
            out.push_str(&format!(",{library}=warn"));
        }
    } else if matches!(level.as_deref(), Some("debug" | "trace")) {
        for library in PAYLOAD_LIBRARIES.into_iter().filter(|l| !names(l)) {
            out.push_str(&format!(",{library}=info"));
        }
    }
    for target in ECHOING_TARGETS.into_iter().filter(|t| !names(t)) {
        out.push_str(&format!(",{target}=error"));
    }
    out
}

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
/// Colours only when standard error is a terminal.
pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_new(directives(&log.filter))
        .unwrap_or_else(|_| EnvFilter::new(directives("info")));
    // A log line that cannot be written (standard error is a closed pipe) is dropped: the
    // subscriber's own report of it would `eprintln!`, which panics there, in whichever task
    // was logging (the signal handler's: SIGTERM was then ignored).
    let builder = tracing_subscriber::fmt()
        .log_internal_errors(false)
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
            "info,rmcp=warn,sqlx=warn,hyper_util=warn,sqlx_postgres::options=error"
        );
        assert_eq!(
            directives("info,rmcp=info"),
            "info,rmcp=info,sqlx_postgres::options=error",
            "an explicit filter is kept"
        );
        assert_eq!(
            directives("warn,mreg=debug"),
            "warn,mreg=debug,sqlx_postgres::options=error"
        );
    }

    #[test]
    fn debug_does_not_log_mcp_payloads_unless_asked_by_name() {
        assert_eq!(
            directives("debug"),
            "debug,rmcp=info,sqlx_postgres::options=error",
            "everything else at debug"
        );
        assert_eq!(
            directives("TRACE"),
            "TRACE,rmcp=info,sqlx_postgres::options=error"
        );
        assert_eq!(
            directives("debug,sqlx=warn"),
            "debug,sqlx=warn,rmcp=info,sqlx_postgres::options=error"
        );
        assert_eq!(
            directives("debug,rmcp=debug"),
            "debug,rmcp=debug,sqlx_postgres::options=error"
        );
        assert_eq!(
            directives("trace,rmcp::service=trace"),
            "trace,rmcp::service=trace,sqlx_postgres::options=error"
        );
        assert_eq!(
            directives("debug,rmcpx=warn"),
            "debug,rmcpx=warn,rmcp=info,sqlx_postgres::options=error",
            "another crate whose name starts alike does not count"
        );
        assert_eq!(
            directives("mreg=debug"),
            "mreg=debug,sqlx_postgres::options=error",
            "no default level"
        );
        assert_eq!(
            directives("info,sqlx_postgres::options=warn"),
            "info,sqlx_postgres::options=warn",
            "named, it is left as asked"
        );
    }
}
