//! Wall-clock time as the shared crate's [`Timestamp`].

use fogshell_shared::Timestamp;

/// Now, to the millisecond.
pub fn now() -> Timestamp {
    Timestamp::from_system_time(std::time::SystemTime::now())
}
