//! Opaque page cursors. A cursor is the last name of the previous page, base64url-encoded with
//! a version prefix so that its format can change without breaking clients silently.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use domain::{Error, ServerName, ServerSort};

const PREFIX: &str = "n1:";
const HEALTH_PREFIX: &str = "h1:";

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

/// The cursor that continues a health-ordered list after `name`, whose health rank is `rank`.
pub fn encode_health(rank: u8, name: &ServerName) -> String {
    URL_SAFE_NO_PAD.encode(format!("{HEALTH_PREFIX}{rank}:{name}"))
}

/// Where a list continues: the page's order decides which kind of cursor it hands out.
pub fn decode_for(cursor: &str, sort: ServerSort) -> Result<(Option<u8>, ServerName), Error> {
    let bad = || {
        Error::invalid(
            "cursor",
            "is not a cursor returned by this API for this order",
        )
    };
    match sort {
        ServerSort::Name => decode(cursor).map(|name| (None, name)).map_err(|_| bad()),
        ServerSort::Health => {
            let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
            let text = String::from_utf8(bytes).map_err(|_| bad())?;
            let rest = text.strip_prefix(HEALTH_PREFIX).ok_or_else(bad)?;
            let (rank, name) = rest.split_once(':').ok_or_else(bad)?;
            let rank: u8 = rank.parse().map_err(|_| bad())?;
            Ok((Some(rank), ServerName::parse(name).map_err(|_| bad())?))
        }
    }
}

/// The cursor of the page after `page`, in `sort` order.
pub fn next<T>(page: &domain::Page<T>, sort: ServerSort) -> Option<String> {
    let name = page.next_after.as_ref()?;
    Some(match (sort, page.next_rank) {
        (ServerSort::Health, Some(rank)) => encode_health(rank, name),
        _ => encode(name),
    })
}

/// Applies a cursor to `query`, in the query's order.
pub fn apply(query: &mut domain::ServerQuery, cursor: Option<&str>) -> Result<(), Error> {
    if let Some(cursor) = cursor {
        let (rank, name) = decode_for(cursor, query.sort)?;
        query.after = Some(name);
        query.after_rank = rank;
    }
    Ok(())
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
        let health = encode_health(2, &ServerName::parse("b").expect("valid"));
        assert_eq!(
            decode_for(&health, ServerSort::Health).ok(),
            Some((Some(2), ServerName::parse("b").expect("valid")))
        );
        assert!(
            decode_for(&health, ServerSort::Name).is_err(),
            "a cursor is tied to its order"
        );
        assert!(
            decode_for(
                &encode(&ServerName::parse("b").expect("valid")),
                ServerSort::Health
            )
            .is_err()
        );
    }
}
