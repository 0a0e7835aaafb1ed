//! Server-sent events as MCP's Streamable HTTP transport uses them: events end with a blank
//! line, and an event's message is in its `data:` lines. The one reading of SSE text in mreg:
//! the proxy's stream watch and the health probe split a stream into events as its bytes arrive
//! with [`Splitter`]; the listing filter splits a whole text with [`events`]; all of them take
//! an event's message from here.

use serde_json::Value;

/// The events of a whole SSE text, line ends (`\r\n`, `\r`, `\n`) made `\n`, each with the
/// blank line that ends it (the last one may be unfinished).
pub fn events(text: &str) -> Vec<String> {
    let mut splitter = Splitter::default();
    splitter.push(text.as_bytes());
    let mut events = Vec::new();
    while let Some(event) = splitter.next_event(str::to_owned) {
        events.push(event);
    }
    if !splitter.unfinished().is_empty() {
        events.push(String::from_utf8_lossy(splitter.unfinished()).into_owned());
    }
    events
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

/// Splits an SSE byte stream into events as its chunks arrive, line ends (`\r\n`, `\r`, `\n`)
/// made `\n`. The search for the blank line that ends an event resumes where it stopped, so each
/// byte is examined a bounded number of times however the stream is cut; an event is decoded as
/// UTF-8 only once it is whole, so a character split between two chunks stays one character.
#[derive(Debug, Default)]
pub struct Splitter {
    /// The bytes pushed and not yet dropped: events already read, before `start`, are dropped
    /// when they are at least half of it (so reading many small events costs no copying each).
    buffer: Vec<u8>,
    /// Where the unfinished event begins.
    start: usize,
    /// Where the search for the end of the event resumes.
    scanned: usize,
    /// The last chunk ended with `\r`: a `\n` starting the next belongs to it.
    carriage: bool,
    /// Bytes examined in all, to check that each is examined a bounded number of times.
    #[cfg(test)]
    pub(crate) examined: usize,
}

impl Splitter {
    /// Appends the next chunk of the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 && self.start >= self.buffer.len() / 2 {
            self.buffer.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        if !self.carriage && !chunk.contains(&b'\r') {
            self.buffer.extend_from_slice(chunk);
            return;
        }
        for &byte in chunk {
            match (byte, self.carriage) {
                (b'\n', true) => self.carriage = false,
                (b'\r', _) => {
                    self.buffer.push(b'\n');
                    self.carriage = true;
                }
                (other, _) => {
                    self.buffer.push(other);
                    self.carriage = false;
                }
            }
        }
    }

    /// Reads the next whole event, if one has arrived, with `read` (the event's text with the
    /// blank line that ends it), and drops it; `None` when no whole event is waiting.
    pub fn next_event<T>(&mut self, read: impl FnOnce(&str) -> T) -> Option<T> {
        let from = self.scanned.saturating_sub(1).max(self.start);
        let found = self.buffer[from..]
            .windows(2)
            .position(|w| w == b"\n\n")
            .map(|at| from + at + 2);
        #[cfg(test)]
        {
            self.examined += found.unwrap_or(self.buffer.len()) - from;
        }
        let Some(end) = found else {
            self.scanned = self.buffer.len();
            return None;
        };
        let value = read(&String::from_utf8_lossy(&self.buffer[self.start..end]));
        self.start = end;
        self.scanned = end;
        Some(value)
    }

    /// The bytes of the event not yet ended.
    pub fn unfinished(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    /// Whether the last byte pushed was `\r` (so the line it ended is already ended).
    pub fn after_carriage_return(&self) -> bool {
        self.carriage
    }

    /// Forgets the event not yet ended.
    pub fn clear(&mut self) {
        self.buffer = Vec::new();
        self.start = 0;
        self.scanned = 0;
    }
}

/// The type an event is dispatched as: its last `event:` field (one space after the colon
/// dropped), `message` when it has none.
pub fn event_type(event: &str) -> &str {
    event
        .lines()
        .filter_map(|l| l.strip_prefix("event:"))
        .map(|t| t.strip_prefix(' ').unwrap_or(t))
        .next_back()
        .unwrap_or("message")
}

/// The JSON-RPC message one event carries, if any.
pub fn message(event: &str) -> Option<Value> {
    serde_json::from_str(&data(event)).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Splitter, event_type, message};

    #[test]
    fn an_event_is_a_message_unless_its_last_event_field_says_otherwise() {
        for (event, kind) in [
            ("data: {}\n\n", "message"),
            ("event: message\ndata: {}\n\n", "message"),
            ("event:message\ndata: {}\n\n", "message"),
            ("event: note\nevent: message\ndata: {}\n\n", "message"),
            ("event:  message\ndata: {}\n\n", " message"),
            ("event: endpoint\ndata: /x\n\n", "endpoint"),
        ] {
            assert_eq!(event_type(event), kind, "{event:?}");
        }
    }

    /// The messages of `text` split into events after it was cut at `cuts`.
    fn messages(text: &[u8], cuts: &[usize]) -> Vec<serde_json::Value> {
        let mut splitter = Splitter::default();
        let mut found = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain([&text.len()]) {
            splitter.push(&text[from..to]);
            from = to;
            while let Some(m) = splitter.next_event(message) {
                found.extend(m);
            }
        }
        found
    }

    #[test]
    fn events_are_found_whatever_the_line_ends_and_wherever_the_stream_is_cut() {
        let text = "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\r\n\r\n\
                    : a comment\rdata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/café\"}\r\r\
                    event: message\ndata: {\"jsonrpc\":\"2.0\",\ndata: \"id\":0,\"result\":{\"text\":\"日本語 🚀\"}}\n\n"
            .as_bytes();
        let whole = messages(text, &[]);
        assert_eq!(
            whole,
            [
                json!({"jsonrpc": "2.0", "method": "notifications/message"}),
                json!({"jsonrpc": "2.0", "method": "notifications/café"}),
                json!({"jsonrpc": "2.0", "id": 0, "result": {"text": "日本語 🚀"}}),
            ]
        );
        // Cut once at every byte (inside `\r\n`, inside a character), and byte by byte.
        for cut in 0..=text.len() {
            assert_eq!(messages(text, &[cut]), whole, "cut at {cut}");
        }
        let every: Vec<usize> = (1..text.len()).collect();
        assert_eq!(messages(text, &every), whole);
        // Many events in one push are read without copying what follows each.
        let mut splitter = Splitter::default();
        let blank = "\n\n".repeat(100_000);
        splitter.push(blank.as_bytes());
        let mut read = 0;
        while splitter.next_event(|e| assert_eq!(e, "\n\n")).is_some() {
            read += 1;
        }
        assert_eq!(read, 100_000);
        assert!(
            splitter.examined <= 2 * blank.len(),
            "{}",
            splitter.examined
        );
        assert!(splitter.unfinished().is_empty());
        let events = super::events(std::str::from_utf8(text).unwrap_or_default());
        assert_eq!(events.len(), 3);
        assert!(events[1].starts_with(": a comment\ndata:"), "{events:?}");
        assert_eq!(
            super::events("data: 1\n\ndata: unfin"),
            ["data: 1\n\n", "data: unfin"]
        );
    }
}
