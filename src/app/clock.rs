//! The time the use cases stamp on what they write. A server reads the system clock; a test
//! hands the server an adjustable clock and moves it forward instead of sleeping, so that two
//! writes are seconds, days or months apart without waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};

use crate::store::{from_micros, to_micros};

/// A source of "now", cheap to clone and shared by every service of one server.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Added to the system time; only an adjustable clock ever changes it.
    offset_micros: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// The system clock shifted by an offset that `advance` increases: time still flows, so
    /// timeouts and intervals behave as in production, but a test can jump ahead.
    pub fn adjustable() -> Self {
        Self {
            offset_micros: Some(Arc::new(AtomicI64::new(0))),
        }
    }

    /// Now, truncated to the microsecond precision the database stores, so that what a write
    /// returns equals what a later read returns.
    pub fn now(&self) -> DateTime<Utc> {
        let offset = self
            .offset_micros
            .as_ref()
            .map_or(0, |offset| offset.load(Ordering::SeqCst));
        from_micros(to_micros(Utc::now()).saturating_add(offset))
    }

    /// Moves an adjustable clock forward by `by`. Panics on the system clock: moving real time
    /// is a programming error, not a runtime condition.
    pub fn advance(&self, by: TimeDelta) {
        let offset = self
            .offset_micros
            .as_ref()
            .expect("only an adjustable clock can be advanced");
        let micros = by
            .num_microseconds()
            .expect("an advance fits in i64 microseconds");
        offset.fetch_add(micros, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adjustable_clock_jumps_ahead_and_keeps_flowing() {
        let clock = Clock::adjustable();
        let before = clock.now();
        clock.advance(TimeDelta::days(30));
        let after = clock.now();
        assert!(after - before >= TimeDelta::days(30));
        assert!(after - before < TimeDelta::days(30) + TimeDelta::seconds(5));
    }

    #[test]
    fn clones_share_one_offset() {
        let clock = Clock::adjustable();
        let shared = clock.clone();
        clock.advance(TimeDelta::hours(2));
        assert!(shared.now() - Utc::now() > TimeDelta::minutes(119));
    }

    #[test]
    fn now_is_whole_microseconds() {
        let now = Clock::system().now();
        assert_eq!(now.timestamp_subsec_nanos() % 1_000, 0);
    }
}
