//! The WebSocket PTY frame decoders, fed any text a browser could send.
//! Whatever decodes must re-encode to text that decodes to the same frame.
#![no_main]

use fogshell_shared::frame::{ClientFrame, ServerFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = ClientFrame::decode(text) {
        assert_eq!(ClientFrame::decode(&frame.encode()), Ok(frame));
    }
    if let Ok(frame) = ServerFrame::decode(text) {
        assert_eq!(ServerFrame::decode(&frame.encode()), Ok(frame));
    }
});
