//! The QUIC settings both ends of the link use, defined once (each side builds its quinn
//! configuration from them; this crate has no quinn).

use std::time::Duration;

/// How long a link may be silent before QUIC closes it (the node becomes `disconnected`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// How often an idle link sends a keep-alive: four times per idle timeout, so a single lost
/// packet never ends a link.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(250);

/// How much of one stream a node may send ahead of the coordinator's reads, bytes (the
/// coordinator's receive window). Terminal output
/// is bounded by it end to end: small enough that little is queued when Ctrl-C stops a flood,
/// large enough for the PTY's full speed at fog-node round-trip times.
pub const STREAM_WINDOW: u32 = 128 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alives_fit_in_the_idle_timeout() {
        assert_eq!(KEEP_ALIVE_INTERVAL * 4, IDLE_TIMEOUT);
    }
}
