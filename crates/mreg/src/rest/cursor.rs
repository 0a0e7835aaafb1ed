//! Opaque page cursors. A cursor is the last name of the previous page, base64url-encoded with
//! a version prefix so that its format can change without breaking clients silently.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use domain::{Error, ServerName};

const PREFIX: &str = "n1:";

/// The cursor that continues after `name`.
pub fn encode(name: &ServerName) -> String {
    URL_SAFE_NO_PAD.encode(format!("{PREFIX}{name}"))
}

/// The name a cursor continues after; a cursor mreg did not make is invalid input.
pub fn decode(cursor: &str) -> Result<ServerName, Error> {
    let bad = || Error::invalid("cursor", "is not a cursor returned by this API");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let name = text.strip_prefix(PREFIX).ok_or_else(bad)?;
    ServerName::parse(name).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_rejected() {
        let name = ServerName::parse("weather-2").expect("valid");
        assert_eq!(decode(&encode(&name)).ok(), Some(name));
        for bad in ["", "!!", "bjE6", "eDp3ZWF0aGVy", "bjE6V0VBVEhFUg"] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
