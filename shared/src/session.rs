//! A session's lifecycle as a state machine both the coordinator and its tests can check.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a session is in its life (`status` in `GET /v1/sessions/{id}`).
///
/// ```text
/// pending ──► running ──► terminated
///    │          │  ▲
///    │          ▼  │ (resumed elsewhere)
///    │      interrupted ──► resuming ──► running
///    ▼          │              │
///  failed ◄─────┴──────────────┘
/// ```
/// `terminated` and `failed` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Placed; the node is starting the container.
    Pending,
    /// The shell runs and can be attached.
    Running,
    /// Its node was lost; the session is not reachable.
    Interrupted,
    /// Being started again somewhere else (failover).
    Resuming,
    /// Ended by the user, its TTL or its shell exiting.
    Terminated,
    /// Could not start, or could not be resumed.
    Failed,
}

impl SessionStatus {
    /// Whether the session can still change state.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Terminated | Self::Failed)
    }

    /// Whether `self → next` is a legal transition. Staying in the same state is not a
    /// transition.
    pub fn can_become(self, next: SessionStatus) -> bool {
        use SessionStatus::*;
        matches!(
            (self, next),
            (Pending, Running | Failed | Terminated | Interrupted)
                | (Running, Interrupted | Terminated | Failed)
                | (Interrupted, Resuming | Running | Failed | Terminated)
                | (Resuming, Running | Failed | Terminated)
        )
    }

    /// The lowercase name used in JSON and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Interrupted => "interrupted",
            Self::Resuming => "resuming",
            Self::Terminated => "terminated",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::SessionStatus::{self, *};

    const ALL: [SessionStatus; 6] = [Pending, Running, Interrupted, Resuming, Terminated, Failed];

    #[test]
    fn final_states_go_nowhere() {
        for from in [Terminated, Failed] {
            assert!(from.is_final());
            for to in ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn failover_path_is_legal_and_no_state_loops_to_itself() {
        assert!(Running.can_become(Interrupted));
        assert!(Interrupted.can_become(Resuming));
        assert!(Resuming.can_become(Running));
        assert!(Resuming.can_become(Failed));
        for s in ALL {
            assert!(!s.can_become(s), "{s} -> {s}");
        }
        // Nothing goes back to pending.
        for s in ALL {
            assert!(!s.can_become(Pending));
        }
    }

    #[test]
    fn every_live_state_can_end() {
        for s in ALL.into_iter().filter(|s| !s.is_final()) {
            assert!(s.can_become(Terminated) && s.can_become(Failed), "{s}");
        }
    }
}
