//! The agent's clock: `fogshell-shared` has none, so time enters here.

use fogshell_shared::Timestamp;

/// Now, to the millisecond.
pub fn now() -> Timestamp {
    Timestamp::from_system_time(std::time::SystemTime::now())
}
