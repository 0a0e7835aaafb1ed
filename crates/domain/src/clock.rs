//! The clock the gateway measures expiry by: the system clock plus an offset that only a test
//! moves, so that what expires with time (cache entries, sign-ins, codes, grants) can be tested
//! without waiting for it. Not moved by it: JWT validation (the `jsonwebtoken` crate reads the
//! system clock), Redis's expiry, the health monitor and audit timestamps; a test that moves the
//! clock and then presents a token minted after the move may find it not yet valid.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

/// The system clock, moved forward by [`Clock::advance`]. Clones share the offset, so a test
/// holding one moves the gateway's.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// Microseconds added to every reading.
    offset_us: Arc<AtomicU64>,
}

impl Clock {
    /// The system clock, not moved.
    pub fn system() -> Self {
        Self::default()
    }

    /// The time now (microsecond precision, as [`crate::now`]).
    pub fn now(&self) -> OffsetDateTime {
        crate::now() + self.offset()
    }

    /// The time now in Unix seconds.
    pub fn unix(&self) -> i64 {
        self.now().unix_timestamp()
    }

    /// A monotonic reading, for deadlines within this process.
    pub fn instant(&self) -> Instant {
        Instant::now() + self.offset()
    }

    /// Moves this clock (and every clone of it) forward by `by`: for tests of expiry.
    pub fn advance(&self, by: Duration) {
        let us = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.offset_us.fetch_add(us, Ordering::Relaxed);
    }

    fn offset(&self) -> Duration {
        Duration::from_micros(self.offset_us.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_every_clone_and_both_readings() {
        let clock = Clock::system();
        let seen_by_gateway = clock.clone();
        let (before, before_instant) = (seen_by_gateway.now(), seen_by_gateway.instant());
        clock.advance(Duration::from_secs(3600));
        assert!(seen_by_gateway.now() - before >= time::Duration::hours(1));
        assert!(seen_by_gateway.instant() - before_instant >= Duration::from_secs(3600));
        assert!(Clock::system().now() - before < time::Duration::hours(1));
    }
}
