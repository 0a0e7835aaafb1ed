//! Opaque page cursors. A cursor is where the previous page ended (the last server's id and
//! name, and for a list by health its rank), base64url-encoded with a version prefix so that its
//! format can change without breaking clients silently. Cursors of the first version, which
//! held only the name, are still read: they continue after every server of that name.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use domain::{Error, ServerName, ServerSort};
use uuid::Uuid;

/// Name order: `n2:ID:NAME` (`n1:NAME` before ids were part of it).
const PREFIX: &str = "n2:";
const PREFIX_V1: &str = "n1:";
/// Health order: `h2:RANK:ID:NAME` (`h1:RANK:NAME`).
const HEALTH_PREFIX: &str = "h2:";
const HEALTH_PREFIX_V1: &str = "h1:";

/// Where a list continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct After {
    /// With the health order: the health rank of the last server.
    pub rank: Option<u8>,
    /// The last server's name.
    pub name: ServerName,
    /// The last server's id; `None` from a first-version cursor.
    pub id: Option<Uuid>,
}

impl After {
    fn encode(&self) -> String {
        let id = self.id.map(|id| id.to_string()).unwrap_or_default();
        let text = match self.rank {
            Some(rank) => format!("{HEALTH_PREFIX}{rank}:{id}:{}", self.name),
            None => format!("{PREFIX}{id}:{}", self.name),
        };
        URL_SAFE_NO_PAD.encode(text)
    }
}

/// Reads a cursor of `sort`'s order; a cursor mreg did not make, or made for the other order,
/// is invalid input.
pub fn decode(cursor: &str, sort: ServerSort) -> Result<After, Error> {
    let bad = || {
        Error::invalid(
            "cursor",
            "is not a cursor returned by this API for this order",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (rank, rest, versioned) = match sort {
        ServerSort::Name => match text.strip_prefix(PREFIX) {
            Some(rest) => (None, rest, true),
            None => (None, text.strip_prefix(PREFIX_V1).ok_or_else(bad)?, false),
        },
        ServerSort::Health => {
            let (rest, versioned) = match text.strip_prefix(HEALTH_PREFIX) {
                Some(rest) => (rest, true),
                None => (text.strip_prefix(HEALTH_PREFIX_V1).ok_or_else(bad)?, false),
            };
            let (rank, rest) = rest.split_once(':').ok_or_else(bad)?;
            (Some(rank.parse().map_err(|_| bad())?), rest, versioned)
        }
    };
    let (id, name) = if versioned {
        let (id, name) = rest.split_once(':').ok_or_else(bad)?;
        (Some(Uuid::try_parse(id).map_err(|_| bad())?), name)
    } else {
        (None, rest)
    };
    Ok(After {
        rank,
        name: ServerName::parse(name).map_err(|_| bad())?,
        id,
    })
}

/// The cursor of the page after `page`, in `sort` order.
pub fn next<T>(page: &domain::Page<T>, sort: ServerSort) -> Option<String> {
    let after = After {
        rank: match sort {
            ServerSort::Health => Some(page.next_rank?),
            ServerSort::Name => None,
        },
        name: page.next_after.clone()?,
        id: page.next_after_id,
    };
    Some(after.encode())
}

/// Applies a cursor to `query`, in the query's order.
pub fn apply(query: &mut domain::ServerQuery, cursor: Option<&str>) -> Result<(), Error> {
    if let Some(cursor) = cursor {
        let after = decode(cursor, query.sort)?;
        query.after = Some(after.name);
        query.after_id = after.id;
        query.after_rank = after.rank;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> ServerName {
        ServerName::parse(text).expect("valid")
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_rejected() {
        let id = Uuid::now_v7();
        for after in [
            After {
                rank: None,
                name: name("weather-2"),
                id: Some(id),
            },
            After {
                rank: Some(2),
                name: name("b"),
                id: Some(id),
            },
        ] {
            let sort = if after.rank.is_some() {
                ServerSort::Health
            } else {
                ServerSort::Name
            };
            let other = if after.rank.is_some() {
                ServerSort::Name
            } else {
                ServerSort::Health
            };
            assert_eq!(decode(&after.encode(), sort).ok(), Some(after.clone()));
            assert!(
                decode(&after.encode(), other).is_err(),
                "a cursor is tied to its order"
            );
        }
        // First-version cursors (a name only) still continue a list.
        assert_eq!(
            decode(&URL_SAFE_NO_PAD.encode("n1:weather"), ServerSort::Name).ok(),
            Some(After {
                rank: None,
                name: name("weather"),
                id: None
            })
        );
        assert_eq!(
            decode(&URL_SAFE_NO_PAD.encode("h1:3:b"), ServerSort::Health).ok(),
            Some(After {
                rank: Some(3),
                name: name("b"),
                id: None
            })
        );
        for bad in [
            "",
            "!!",
            "bjE6",
            "eDp3ZWF0aGVy",
            "bjE6V0VBVEhFUg",
            &URL_SAFE_NO_PAD.encode("n2:not-a-uuid:weather"),
            &URL_SAFE_NO_PAD.encode(format!("n2:{id}")),
            &URL_SAFE_NO_PAD.encode(format!("h2:x:{id}:b")),
        ] {
            assert!(decode(bad, ServerSort::Name).is_err(), "{bad}");
            assert!(decode(bad, ServerSort::Health).is_err(), "{bad}");
        }
    }
}
