//! The default of every setting, written once. The command line shows them (`--help`), the
//! configuration file and `LEADPIPE_*` variables override them, and `server::Settings::new`
//! starts from them, so a server built in code behaves as `leadpipe serve` does.
//!
//! A leaf module: it imports nothing of leadpipe, so every layer may read it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

pub const DATABASE_URL: &str = "sqlite://leadpipe.db";
pub const DB_POOL_SIZE: u32 = 8;
/// How long a call waits for a database connection, and on SQLite for the write lock.
pub const DB_TIMEOUT: Duration = Duration::from_secs(2);

pub const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50051);
pub const OUTBOX_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// How long lead revisions are kept; None keeps them forever.
pub const REVISION_RETENTION: Option<Duration> = None;
/// How a retention that never expires is written.
pub const FOREVER: &str = "forever";
pub const MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;
pub const MAX_STREAMS_PER_TENANT: usize = 1000;
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const RATE_LIMIT_PER_SECOND: u32 = 2000;
pub const RATE_LIMIT_BURST: u32 = 4000;
pub const MAX_CONNECTIONS: usize = 10_000;
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How often expired events and idempotency keys are removed (not a flag).
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);
/// How often stream tailers re-read the outbox when no commit woke them (not a flag).
pub const EVENT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often the database is checked for health (not a flag).
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// `duration` as the command line and the configuration file write it, e.g. `7days` or `2s`.
pub fn text(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// A retention as the command line writes it: a duration, or `forever`.
pub fn retention_text(retention: Option<Duration>) -> String {
    retention.map_or_else(|| FOREVER.to_owned(), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_back_as_written() {
        for duration in [
            DB_TIMEOUT,
            OUTBOX_RETENTION,
            REQUEST_TIMEOUT,
            FIRST_REQUEST_TIMEOUT,
        ] {
            assert_eq!(humantime::parse_duration(&text(duration)), Ok(duration));
        }
    }
}
