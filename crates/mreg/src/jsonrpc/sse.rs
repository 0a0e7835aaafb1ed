//! Server-sent events as MCP's Streamable HTTP transport uses them: events end with a blank
//! line, and an event's message is in its `data:` lines. The one reading of SSE text in mreg:
//! the proxy's stream watch (which finds where events end as bytes arrive), the listing filter
//! and the health probe all take an event's message from here.

use serde_json::Value;

use super::is_response_to;

/// The events of a whole SSE text, line ends made `\n`, each with the blank line that ends it
/// (the last one may be unfinished).
pub fn events(text: &str) -> Vec<String> {
    text.replace("\r\n", "\n")
        .split_inclusive("\n\n")
        .map(str::to_owned)
        .collect()
}

/// An event's data: its `data:` lines (one space after the colon dropped), joined by `\n`.
pub fn data(event: &str) -> String {
    event
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The JSON-RPC message one event carries, if any.
pub fn message(event: &str) -> Option<Value> {
    serde_json::from_str(&data(event)).ok()
}

/// The response to the request `id` among the events of a whole SSE text, if it has come.
pub fn answer(text: &str, id: &Value) -> Option<Value> {
    events(text)
        .iter()
        .filter_map(|event| message(event))
        .find(|m| is_response_to(m, id))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn the_answer_is_found_after_notifications_whatever_the_line_ends() {
        let text = "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\r\n\r\n\
                    event: message\ndata: {\"jsonrpc\":\"2.0\",\ndata: \"id\":0,\"result\":{}}\n\n";
        assert_eq!(
            super::answer(text, &json!(0)),
            Some(json!({"jsonrpc": "2.0", "id": 0, "result": {}}))
        );
        assert_eq!(super::answer(text, &json!(1)), None);
        assert_eq!(super::events(text).len(), 2);
    }
}
