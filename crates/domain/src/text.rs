//! Text the gateway puts into answers, logs and audit rows from sources it does not control.

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
