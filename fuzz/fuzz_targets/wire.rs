//! The agent ↔ coordinator wire decoders, fed any bytes a peer could send: whole bodies of
//! every message type, and the same bytes as a length-prefixed stream split at a fuzzer-chosen
//! point. Whatever decodes must encode again and decode to the same value.
#![no_main]

use fogshell_shared::wire::{
    AgentMessage, CoordinatorMessage, Decoder, PtyMessage, PtyStreamHeader, decode_body, encode,
};
use libfuzzer_sys::fuzz_target;

fn body<T>(bytes: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = decode_body::<T>(bytes) {
        let again = encode(&value).expect("a decoded message encodes again");
        assert_eq!(decode_body::<T>(&again[4..]).ok(), Some(value));
    }
}

fuzz_target!(|data: &[u8]| {
    body::<AgentMessage>(data);
    body::<CoordinatorMessage>(data);
    body::<PtyStreamHeader>(data);
    body::<PtyMessage>(data);
    body::<fogshell_shared::wire::join::JoinRequest>(data);
    body::<fogshell_shared::wire::join::JoinResponse>(data);

    // The stream decoder, bytes arriving in two pieces; the first byte picks the split.
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let (a, b) = stream.split_at(usize::from(split).min(stream.len()));
    let mut decoder = Decoder::new();
    decoder.extend(a);
    while let Ok(Some(_)) = decoder.next_message::<AgentMessage>() {}
    decoder.extend(b);
    while let Ok(Some(_)) = decoder.next_message::<AgentMessage>() {}
    let _ = decoder.finish();
});
