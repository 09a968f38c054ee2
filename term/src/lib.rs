//! The user's own terminal, for `fogshell-agent run` and `fogshell-coordinator shell`: raw
//! mode while a session is attached, its size, and restoring it afterwards whatever happens.

use std::io::IsTerminal;

use fogshell_shared::frame::TermSize;
use rustix::termios::{OptionalActions, Termios, tcgetattr, tcgetwinsize, tcsetattr};

/// Puts stdin in raw mode until dropped (no-op when stdin is not a terminal, e.g. in tests).
#[derive(Debug)]
pub struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    /// Enters raw mode.
    pub fn enter() -> std::io::Result<Self> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(Self { saved: None });
        }
        let saved = tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Flush, &raw)?;
        Ok(Self { saved: Some(saved) })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = tcsetattr(std::io::stdin(), OptionalActions::Flush, saved);
        }
    }
}

/// The size of the terminal on stdout, or 80×24 when it is not a terminal.
pub fn size() -> TermSize {
    tcgetwinsize(std::io::stdout())
        .ok()
        .and_then(|w| TermSize::new(w.ws_col.clamp(1, 1000), w.ws_row.clamp(1, 1000)))
        .unwrap_or_else(|| TermSize::new(80, 24).expect("80x24 is in range"))
}
