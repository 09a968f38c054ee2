//! HTTP API request bodies and the strings inside them (image references, timestamps),
//! fed any bytes a client could send.
#![no_main]

use fogshell_shared::api::{CreateSessionRequest, EventQuery};
use fogshell_shared::image::ImageRef;
use fogshell_shared::timestamp::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<CreateSessionRequest>(data) {
        let _ = req.validate();
        let text = serde_json::to_string(&req).expect("a decoded body encodes again");
        assert_eq!(
            serde_json::from_str::<CreateSessionRequest>(&text).ok(),
            Some(req)
        );
    }
    if let Ok(query) = serde_json::from_slice::<EventQuery>(data) {
        let _ = query.validate();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(image) = text.parse::<ImageRef>() {
            assert_eq!(image.to_string().parse::<ImageRef>().ok(), Some(image));
        }
        if let Ok(t) = text.parse::<Timestamp>() {
            assert_eq!(t.to_string().parse::<Timestamp>().ok(), Some(t));
        }
    }
});
