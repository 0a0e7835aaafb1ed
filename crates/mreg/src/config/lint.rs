//! Variables that look like mreg's but that mreg does not read, for `mreg check-config`: a typo
//! (`MREG_API_PROT`) is otherwise silently ignored and the default used, and a FastMCP setting
//! carried over from the seed deployment (`FASTMCP_LOG_LEVEL`) looks as if it did something.

use super::settings::{self, SETTINGS};

/// `MREG_*` variables that are not settings but are read by mreg's client commands or its own
/// test and benchmark tools.
const CLIENT_VARIABLES: &[&str] = &["MREG_CONFIG", "MREG_TOKEN", "MREG_CREDENTIALS", "MREG_BIN"];
/// Prefixes of variables the test suite and benchmarks read.
const TOOL_PREFIXES: &[&str] = &["MREG_TEST_", "MREG_BENCH_"];
/// Old names of client variables, and their replacement.
const DEPRECATED: &[(&str, &str)] = &[
    ("MREG_URL", "MREG_GATEWAY_URL"),
    ("MREG_MCP_URL", "MREG_GATEWAY_URL"),
    ("MREG_MCP_ENDPOINT", "MREG_GATEWAY_URL"),
];

/// The names of the variables in `./.env` and in the environment, with where each was found.
pub fn present() -> Vec<(String, &'static str)> {
    let mut names: Vec<(String, &'static str)> = dotenvy::from_path_iter(".env")
        .map(|iter| {
            iter.filter_map(Result::ok)
                .map(|(k, _)| (k, ".env"))
                .collect()
        })
        .unwrap_or_default();
    names.extend(
        std::env::vars_os().filter_map(|(k, _)| Some((k.into_string().ok()?, "environment"))),
    );
    names
}

/// One warning about each variable that mreg does not read, for people.
pub fn warnings<'a>(names: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    let mut out: Vec<String> = names
        .into_iter()
        .filter_map(|(name, origin)| warning(name).map(|w| format!("{name} ({origin}): {w}")))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn warning(name: &str) -> Option<String> {
    if settings::by_env(name).is_some() {
        return None;
    }
    if let Some((_, new)) = DEPRECATED.iter().find(|(old, _)| *old == name) {
        return Some(format!("deprecated; use {new}"));
    }
    if name.starts_with("MREG_") {
        if CLIENT_VARIABLES.contains(&name) || TOOL_PREFIXES.iter().any(|p| name.starts_with(p)) {
            return None;
        }
        return Some(match closest(name) {
            Some(known) => format!("not an mreg setting, ignored (did you mean {known}?)"),
            None => "not an mreg setting, ignored".to_owned(),
        });
    }
    if name.starts_with("FASTMCP_") {
        if let Some(known) = closest(name).filter(|k| k.starts_with("FASTMCP_")) {
            return Some(format!(
                "not a setting mreg reads, ignored (did you mean {known}?)"
            ));
        }
        let read: Vec<&str> = SETTINGS
            .iter()
            .map(|s| s.env)
            .filter(|e| e.starts_with("FASTMCP_"))
            .collect();
        return Some(format!(
            "a FastMCP setting mreg does not use, ignored (of FastMCP's variables mreg reads only {})",
            read.join(" and ")
        ));
    }
    None
}

/// The setting whose name is within two edits of `name`, if one is.
fn closest(name: &str) -> Option<&'static str> {
    SETTINGS
        .iter()
        .map(|s| (distance(name, s.env), s.env))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, env)| env)
}

/// Levenshtein distance between two ASCII names.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::warnings;

    #[test]
    fn typos_fastmcp_settings_and_old_names_are_named_and_known_variables_are_not() {
        let found = warnings([
            ("MREG_API_PROT", "environment"),
            ("MREG_NOTHING_LIKE_IT", ".env"),
            ("FASTMCP_LOG_LEVEL", "environment"),
            ("FASTMCP_SERVER_PROT", "environment"),
            ("MREG_URL", "environment"),
            ("MREG_API_PORT", "environment"),
            ("FASTMCP_SERVER_PORT", "environment"),
            ("MREG_TOKEN", "environment"),
            ("MREG_TEST_DATABASE_URL", "environment"),
            ("PATH", "environment"),
        ]);
        assert_eq!(
            found,
            [
                "FASTMCP_LOG_LEVEL (environment): a FastMCP setting mreg does not use, ignored (of FastMCP's variables mreg reads only FASTMCP_SERVER_HOST and FASTMCP_SERVER_PORT)",
                "FASTMCP_SERVER_PROT (environment): not a setting mreg reads, ignored (did you mean FASTMCP_SERVER_PORT?)",
                "MREG_API_PROT (environment): not an mreg setting, ignored (did you mean MREG_API_PORT?)",
                "MREG_NOTHING_LIKE_IT (.env): not an mreg setting, ignored",
                "MREG_URL (environment): deprecated; use MREG_GATEWAY_URL",
            ]
        );
    }
}
