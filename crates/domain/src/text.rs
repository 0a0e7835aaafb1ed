//! Text the gateway puts into answers, logs and audit rows from sources it does not control.

/// Most characters of upstream-derived text (an error's cause, an upstream's message) the
/// gateway puts into an answer or an audit row: an upstream controls that text, and a 10 MB
/// answer of the wrong shape must not become a 10 MB error.
pub const MAX_UPSTREAM_TEXT_CHARS: usize = 1024;

/// Describes an error by its innermost cause ("Connection refused (os error 111)"), clipped to
/// [`MAX_UPSTREAM_TEXT_CHARS`].
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    clipped(&cause.to_string(), MAX_UPSTREAM_TEXT_CHARS)
}

/// `text`, cut to `max` characters with a note of how long it was.
pub fn clipped(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}… ({} bytes in all)", &text[..end], text.len()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_text_is_cut_at_a_character_and_says_how_long_it_was() {
        assert_eq!(super::clipped("short", 10), "short");
        assert_eq!(super::clipped("ééé", 2), "éé… (6 bytes in all)");
    }
}
