//! The sessions this node is starting now, and those whose start failed or that ended lately.
//!
//! A coordinator asked to answer early (`Prefer: respond-async`) hands the user an attach
//! token while its `Allocate` is still on the way here, so a viewer can reach the node's edge
//! gateway before its shell exists. The token proves the session was placed on this node; the
//! gateway holds the viewer until the start settles, and tells it why when it failed. A
//! session that ended here is remembered too, so its late viewers are told so at once instead
//! of being held for a start that will never come.

use std::collections::{BTreeSet, VecDeque};

use fogshell_shared::SessionId;
use tokio::sync::watch;

/// Settled sessions remembered for viewers that arrive after: enough for the starts in
/// flight at once and the viewers of the sessions just ended, few enough to cost nothing.
const SETTLED_KEPT: usize = 64;

/// How a session that no longer starts here settled, when it did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Its start failed for this reason.
    Failed(String),
    /// It ran here and was removed.
    Ended,
}

/// What is starting and what settled without running, as the gateway reads it.
#[derive(Debug, Clone, Default)]
pub struct Board {
    starting: BTreeSet<SessionId>,
    /// Newest last.
    settled: VecDeque<(SessionId, Settled)>,
}

impl Board {
    /// Whether an `Allocate` for the session is being carried out.
    pub fn is_starting(&self, session_id: SessionId) -> bool {
        self.starting.contains(&session_id)
    }

    /// How the session settled without running here, if it did lately.
    pub fn settled(&self, session_id: SessionId) -> Option<&Settled> {
        self.settled
            .iter()
            .rev()
            .find(|(id, _)| *id == session_id)
            .map(|(_, settled)| settled)
    }

    fn remember(&mut self, session_id: SessionId, settled: Settled) {
        if self.settled.len() == SETTLED_KEPT {
            self.settled.pop_front();
        }
        self.settled.push_back((session_id, settled));
    }
}

/// The node's board of starts; watchers are woken on every change.
#[derive(Debug)]
pub struct Starts(watch::Sender<Board>);

impl Default for Starts {
    fn default() -> Self {
        Self(watch::Sender::new(Board::default()))
    }
}

impl Starts {
    /// A receiver that sees every change from now on.
    pub fn watch(&self) -> watch::Receiver<Board> {
        self.0.subscribe()
    }

    /// Marks `session_id` as starting until the returned guard is dropped (the start
    /// settled, or was abandoned); [`Start::failed`] records why it did not run.
    pub fn begin(&self, session_id: SessionId) -> Start<'_> {
        self.0.send_modify(|board| {
            board.starting.insert(session_id);
        });
        Start {
            starts: self,
            session_id,
            failure: None,
        }
    }

    /// `session_id` ran here and was removed.
    pub fn ended(&self, session_id: SessionId) {
        self.0
            .send_modify(|board| board.remember(session_id, Settled::Ended));
    }
}

/// One start in progress.
#[derive(Debug)]
pub struct Start<'a> {
    starts: &'a Starts,
    session_id: SessionId,
    failure: Option<String>,
}

impl Start<'_> {
    /// The start failed because of `reason`.
    pub fn failed(mut self, reason: String) {
        self.failure = Some(reason);
    }
}

impl Drop for Start<'_> {
    fn drop(&mut self) {
        let failure = self.failure.take();
        self.starts.0.send_modify(|board| {
            board.starting.remove(&self.session_id);
            // A start cut short because the session was ended meanwhile is an end.
            if let Some(reason) = failure
                && board.settled(self.session_id) != Some(&Settled::Ended)
            {
                board.remember(self.session_id, Settled::Failed(reason));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> SessionId {
        SessionId::from_random_bytes([n; 16])
    }

    #[test]
    fn a_start_is_seen_while_it_runs_and_its_failure_after() {
        let starts = Starts::default();
        let mut watcher = starts.watch();
        let start = starts.begin(id(1));
        assert!(watcher.has_changed().unwrap());
        assert!(watcher.borrow_and_update().is_starting(id(1)));
        start.failed("image refused".into());
        assert!(watcher.has_changed().unwrap());
        let board = watcher.borrow_and_update();
        assert!(!board.is_starting(id(1)));
        assert_eq!(
            board.settled(id(1)),
            Some(&Settled::Failed("image refused".into()))
        );
        assert_eq!(board.settled(id(2)), None);
    }

    #[test]
    fn a_settled_start_leaves_nothing_behind() {
        let starts = Starts::default();
        drop(starts.begin(id(1)));
        let board = starts.watch().borrow().clone();
        assert!(!board.is_starting(id(1)));
        assert_eq!(board.settled(id(1)), None);
        starts.ended(id(1));
        assert_eq!(
            starts.watch().borrow().settled(id(1)),
            Some(&Settled::Ended)
        );
    }

    #[test]
    fn a_start_cut_short_by_its_end_is_an_end() {
        let starts = Starts::default();
        let start = starts.begin(id(1));
        starts.ended(id(1));
        start.failed("the shim did not start the shell".into());
        assert_eq!(
            starts.watch().borrow().settled(id(1)),
            Some(&Settled::Ended)
        );
    }

    #[test]
    fn only_the_latest_are_kept() {
        let starts = Starts::default();
        for n in 0..=SETTLED_KEPT as u8 {
            starts.begin(id(n)).failed(format!("failure {n}"));
        }
        let board = starts.watch().borrow().clone();
        assert_eq!(board.settled(id(0)), None, "the oldest is forgotten");
        assert_eq!(
            board.settled(id(1)),
            Some(&Settled::Failed("failure 1".into()))
        );
        let last = SETTLED_KEPT as u8;
        assert_eq!(
            board.settled(id(last)),
            Some(&Settled::Failed(format!("failure {last}")))
        );
    }
}
