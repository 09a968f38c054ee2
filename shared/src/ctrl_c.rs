//! What a client does with terminal output around a Ctrl-C it typed, the client half of the
//! `flush` frame ([`crate::frame::ServerFrame::Flush`]).
//!
//! A tty that takes Ctrl-C as an interrupt discards the output it still holds, so on a local
//! terminal a flood stops at once. Between a remote shell and the screen sit more buffers
//! (the node's, the link's, the gateway's, the socket's) than a tty's; what they hold when the
//! interrupt lands was produced before it and would still scroll by. So a client holds back
//! the output that arrives after it sent Ctrl-C until the gateway's `flush` frame says where
//! the interrupt fell: with `discard`, what came before that point is dropped, as the tty
//! dropped its own; without (a program in raw mode took the key), everything is drawn. A
//! client whose answer does not come draws what it held ([`CtrlCHold::release`]).
//!
//! Sans-I/O: the caller feeds it what it sends and receives and draws what it returns.

use std::time::{Duration, Instant};

/// Ctrl-C, the byte that starts a hold.
pub const CTRL_C: u8 = 0x03;

/// How long output is held for an answer at most. The answer follows all the output the shell
/// wrote before the interrupt, so it comes after the flood's window has drained to the
/// screen: about a millisecond on a quick path, but a quarter of a second is not enough on a
/// slow link or a busy machine, and then the stale output is drawn after all. A gateway that
/// never answers (an older one) costs this once per Ctrl-C.
pub const HOLD_AT_MOST: Duration = Duration::from_millis(1000);

/// A client's `stdout` bookkeeping around its Ctrl-Cs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CtrlCHold {
    /// `stdout` payload bytes received on this socket.
    received: u64,
    /// Ctrl-Cs sent and not yet answered.
    pending: u32,
    /// Output held back, which began at socket position `received - held.len()`.
    held: Vec<u8>,
    /// Bytes dropped so far.
    dropped: u64,
    /// When the current hold began.
    held_since: Option<Instant>,
}

impl CtrlCHold {
    /// A client that has received nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The client sent `input` at `now`: if it carries Ctrl-C, output is held from now until
    /// the answer, or until [`CtrlCHold::deadline`].
    pub fn sent(&mut self, input: &[u8], now: Instant) {
        let interrupts = input.iter().filter(|&&b| b == CTRL_C).count();
        if interrupts > 0 && self.pending == 0 {
            self.held_since = Some(now);
        }
        self.pending = self
            .pending
            .saturating_add(u32::try_from(interrupts).unwrap_or(u32::MAX));
    }

    /// While holding: when to give up on the answer and [`release`](CtrlCHold::release).
    pub fn deadline(&self) -> Option<Instant> {
        self.held_since
            .filter(|_| self.pending > 0)
            .map(|since| since + HOLD_AT_MOST)
    }

    /// `stdout` arrived; returns what to draw now (nothing while holding).
    pub fn received(&mut self, data: &[u8]) -> Vec<u8> {
        self.received += data.len() as u64;
        if self.pending == 0 {
            return data.to_vec();
        }
        self.held.extend_from_slice(data);
        Vec::new()
    }

    /// The gateway's `flush` answer arrived; returns what to draw now. With `discard`, held
    /// bytes before socket position `bytes` are dropped. Answers to nobody's hold (another
    /// viewer's Ctrl-C) change nothing.
    pub fn flush(&mut self, bytes: u64, discard: bool) -> Vec<u8> {
        if self.pending == 0 {
            return Vec::new();
        }
        self.pending -= 1;
        if discard {
            let held_from = self.received - self.held.len() as u64;
            let stale = bytes.saturating_sub(held_from).min(self.held.len() as u64);
            self.held.drain(..stale as usize);
            self.dropped += stale;
        }
        if self.pending == 0 {
            std::mem::take(&mut self.held)
        } else {
            Vec::new()
        }
    }

    /// Gives up waiting for the answers (they are late or will never come): returns
    /// everything held, to draw.
    pub fn release(&mut self) -> Vec<u8> {
        self.pending = 0;
        std::mem::take(&mut self.held)
    }

    /// Whether output is being held.
    pub fn holding(&self) -> bool {
        self.pending > 0
    }

    /// Bytes drawn or dropped: what the client has consumed, for its acknowledgements.
    pub fn consumed(&self) -> u64 {
        self.received - self.held.len() as u64
    }

    /// Bytes dropped as stale so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn output_before_the_interrupt_is_dropped_and_the_rest_drawn() {
        let mut hold = CtrlCHold::new();
        assert_eq!(hold.received(b"yyyy"), b"yyyy");
        hold.sent(b"\x03", Instant::now());
        assert!(hold.holding());
        // Produced before the interrupt: 6 more bytes; then the prompt.
        assert_eq!(hold.received(b"yyyyyy"), b"");
        assert_eq!(hold.received(b"^C\r\n$ "), b"");
        assert_eq!(hold.flush(10, true), b"^C\r\n$ ");
        assert_eq!(hold.dropped(), 6);
        assert!(!hold.holding());
        assert_eq!(hold.consumed(), 4 + 6 + 6);
    }

    #[test]
    fn a_key_a_raw_program_took_loses_nothing() {
        let mut hold = CtrlCHold::new();
        hold.sent(b"\x03", Instant::now());
        assert_eq!(hold.received(b"before"), b"");
        assert_eq!(hold.flush(6, false), b"before");
        assert_eq!(hold.dropped(), 0);
    }

    #[test]
    fn a_late_answer_is_given_up_on() {
        let mut hold = CtrlCHold::new();
        let now = Instant::now();
        assert_eq!(hold.deadline(), None);
        hold.sent(b"ab\x03", now);
        assert_eq!(hold.deadline(), Some(now + HOLD_AT_MOST));
        hold.received(b"held");
        assert_eq!(hold.release(), b"held");
        assert!(!hold.holding());
        assert_eq!(hold.deadline(), None);
        // The answer that comes after changes nothing.
        assert_eq!(hold.flush(4, true), b"");
        assert_eq!(hold.received(b"next"), b"next");
    }

    #[test]
    fn input_without_ctrl_c_holds_nothing() {
        let mut hold = CtrlCHold::new();
        hold.sent(b"ls\r", Instant::now());
        assert_eq!(hold.received(b"out"), b"out");
    }

    proptest! {
        /// Whatever arrives and however it is answered, every byte is drawn once or dropped
        /// once, in order, and only output from before an interrupt point is ever dropped.
        #[test]
        fn every_byte_is_drawn_or_dropped_once_in_order(
            steps in proptest::collection::vec(
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..64).prop_map(Step::Receive),
                    any::<u8>().prop_map(|n| Step::Send(n % 3)),
                    (any::<u64>(), any::<bool>()).prop_map(|(b, d)| Step::Flush(b, d)),
                    Just(Step::Release),
                ],
                0..40,
            )
        ) {
            let mut hold = CtrlCHold::new();
            let mut all = Vec::new();
            let mut drawn = Vec::new();
            let mut flush_points = Vec::new();
            for step in steps {
                match step {
                    Step::Receive(data) => {
                        all.extend_from_slice(&data);
                        drawn.extend(hold.received(&data));
                    }
                    Step::Send(n) => hold.sent(&vec![CTRL_C; usize::from(n)], Instant::now()),
                    Step::Flush(bytes, discard) => {
                        let bytes = bytes % (all.len() as u64 + 8);
                        if discard {
                            flush_points.push(bytes);
                        }
                        drawn.extend(hold.flush(bytes, discard));
                    }
                    Step::Release => drawn.extend(hold.release()),
                }
                prop_assert!(hold.consumed() <= all.len() as u64);
            }
            drawn.extend(hold.release());
            prop_assert_eq!(drawn.len() as u64 + hold.dropped(), all.len() as u64);
            // Drawn in order: a subsequence of what arrived (greedy matching decides that).
            let mut matched = 0;
            for byte in &all {
                if matched < drawn.len() && drawn[matched] == *byte {
                    matched += 1;
                }
            }
            prop_assert_eq!(matched, drawn.len());
            // Nothing after the last discarding flush point is ever dropped.
            let last_point = flush_points.iter().copied().max().unwrap_or(0);
            let kept = &all[usize::try_from(last_point).unwrap_or(usize::MAX).min(all.len())..];
            prop_assert!(drawn.ends_with(kept));
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Receive(Vec<u8>),
        Send(u8),
        Flush(u64, bool),
        Release,
    }
}
