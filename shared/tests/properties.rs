//! Property tests over everything that crosses the network.
//!
//! Two families:
//! - round trips: any value the types can hold (made by their `Arbitrary` impls from random
//!   bytes) encodes and decodes back to itself;
//! - robustness: any bytes, and any corruption of a valid encoding, decode to `Ok` or `Err`,
//!   never a panic, and never to a value that fails to encode again.

use arbitrary::{Arbitrary, Unstructured};
use proptest::prelude::*;

use fogshell_shared::api::{
    CreateSessionRequest, CreateSessionResponse, EventQuery, Page, SessionView, TerminateResponse,
};
use fogshell_shared::audit::{AuditEntry, AuditRecord, ChainHash, verify_chain};
use fogshell_shared::error::ErrorBody;
use fogshell_shared::frame::{ClientFrame, ServerFrame};
use fogshell_shared::image::ImageRef;
use fogshell_shared::timestamp::Timestamp;
use fogshell_shared::wire::{
    AgentMessage, CoordinatorMessage, Decoder, PtyMessage, PtyStreamHeader, decode_body, encode,
};

/// Values of `T` built by its `Arbitrary` impl from random bytes.
fn arb<T>() -> impl Strategy<Value = T>
where
    T: for<'a> Arbitrary<'a> + std::fmt::Debug,
{
    proptest::collection::vec(any::<u8>(), 0..2048).prop_filter_map("not enough bytes", |bytes| {
        T::arbitrary(&mut Unstructured::new(&bytes)).ok()
    })
}

fn wire_round_trip<T>(value: &T) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = encode(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut decoder = Decoder::new();
    decoder.extend(&bytes);
    let back: Option<T> = decoder
        .next_message()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(back.as_ref(), Some(value));
    prop_assert!(decoder.finish().is_ok());
    Ok(())
}

fn json_round_trip<T>(value: &T) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = serde_json::to_string(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back: T =
        serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
    prop_assert_eq!(&back, value);
    Ok(())
}

/// Decodes `bytes` as every wire message type; whatever decodes must encode again.
fn decode_all_wire(bytes: &[u8]) {
    fn check<T: serde::Serialize + serde::de::DeserializeOwned>(bytes: &[u8]) {
        if let Ok(value) = decode_body::<T>(bytes) {
            encode(&value).expect("a decoded message encodes again");
        }
    }
    check::<AgentMessage>(bytes);
    check::<CoordinatorMessage>(bytes);
    check::<PtyStreamHeader>(bytes);
    check::<PtyMessage>(bytes);
    check::<fogshell_shared::wire::join::JoinRequest>(bytes);
    check::<fogshell_shared::wire::join::JoinResponse>(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn agent_messages_round_trip(m in arb::<AgentMessage>()) { wire_round_trip(&m)?; }

    #[test]
    fn coordinator_messages_round_trip(m in arb::<CoordinatorMessage>()) { wire_round_trip(&m)?; }

    #[test]
    fn pty_headers_round_trip(m in arb::<PtyStreamHeader>()) { wire_round_trip(&m)?; }

    #[test]
    fn pty_messages_round_trip(m in arb::<PtyMessage>()) { wire_round_trip(&m)?; }

    #[test]
    fn join_messages_round_trip(
        request in arb::<fogshell_shared::wire::join::JoinRequest>(),
        response in arb::<fogshell_shared::wire::join::JoinResponse>(),
    ) {
        wire_round_trip(&request)?;
        wire_round_trip(&response)?;
    }

    #[test]
    fn client_frames_round_trip(f in arb::<ClientFrame>()) {
        prop_assert_eq!(ClientFrame::decode(&f.encode()), Ok(f));
    }

    #[test]
    fn server_frames_round_trip(f in arb::<ServerFrame>()) {
        prop_assert_eq!(ServerFrame::decode(&f.encode()), Ok(f));
    }

    #[test]
    fn api_bodies_round_trip(
        req in arb::<CreateSessionRequest>(),
        resp in arb::<CreateSessionResponse>(),
        view in arb::<SessionView>(),
        page in arb::<Page<SessionView>>(),
        term in arb::<TerminateResponse>(),
        err in arb::<ErrorBody>(),
        query in arb::<EventQuery>(),
    ) {
        json_round_trip(&req)?;
        json_round_trip(&resp)?;
        json_round_trip(&view)?;
        json_round_trip(&page)?;
        json_round_trip(&term)?;
        json_round_trip(&err)?;
        json_round_trip(&query)?;
    }

    #[test]
    fn audit_chains_of_any_events_verify_and_survive_json(
        entries in proptest::collection::vec(arb::<AuditEntry>(), 1..8)
    ) {
        let mut prev = (0, ChainHash::GENESIS);
        let mut chain = Vec::new();
        for entry in entries {
            let record = AuditRecord::chain(entry, prev);
            prev = (record.seq, record.hash);
            chain.push(record);
        }
        prop_assert!(verify_chain(&chain, (0, ChainHash::GENESIS)).is_ok());
        // What the API returns can be re-verified by the reader.
        let text = serde_json::to_string(&chain).unwrap();
        let back: Vec<AuditRecord> = serde_json::from_str(&text).unwrap();
        prop_assert!(verify_chain(&back, (0, ChainHash::GENESIS)).is_ok());
        prop_assert_eq!(back, chain);
    }

    #[test]
    fn image_refs_and_timestamps_reparse(r in arb::<ImageRef>(), t in arb::<Timestamp>()) {
        prop_assert_eq!(r.to_string().parse::<ImageRef>(), Ok(r));
        prop_assert_eq!(t.to_string().parse::<Timestamp>(), Ok(t));
    }

    #[test]
    fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_all_wire(&bytes);
        // And fed to the stream decoder in two pieces, with a plausible length prefix.
        let mut framed = (bytes.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        let mut decoder = Decoder::new();
        let (a, b) = framed.split_at(framed.len() / 2);
        decoder.extend(a);
        let _ = decoder.next_message::<AgentMessage>();
        decoder.extend(b);
        let _ = decoder.next_message::<AgentMessage>();
    }

    #[test]
    fn corrupted_wire_messages_decode_without_panicking(
        m in arb::<AgentMessage>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = postcard::to_stdvec(&m).unwrap();
        if !bytes.is_empty() {
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
        }
        decode_all_wire(&bytes);
    }

    #[test]
    fn any_text_decodes_as_a_frame_without_panicking(text in ".{0,256}") {
        if let Ok(f) = ClientFrame::decode(&text) { prop_assert_eq!(ClientFrame::decode(&f.encode()), Ok(f)); }
        if let Ok(f) = ServerFrame::decode(&text) { prop_assert_eq!(ServerFrame::decode(&f.encode()), Ok(f)); }
    }

    #[test]
    fn frame_shaped_json_decodes_without_panicking(
        frame_type in prop_oneof![Just("stdin".to_owned()), Just("stdout".to_owned()), Just("resize".to_owned()), Just("exit".to_owned()), Just("status".to_owned()), Just("error".to_owned()), ".{0,8}"],
        data in prop_oneof![Just(serde_json::Value::Null), any::<i64>().prop_map(Into::into), any::<f64>().prop_map(Into::into), ".{0,40}".prop_map(Into::into), any::<bool>().prop_map(Into::into)],
        cols in prop_oneof![any::<i64>().prop_map(serde_json::Value::from), any::<u64>().prop_map(serde_json::Value::from), Just(serde_json::Value::Null)],
    ) {
        let text = serde_json::json!({
            "type": frame_type, "data_b64": data, "cols": cols, "rows": 24, "code": data,
            "state": data, "placement": data, "reason": data, "message": data,
        }).to_string();
        let _ = ClientFrame::decode(&text);
        let _ = ServerFrame::decode(&text);
    }

    #[test]
    fn any_json_body_decodes_without_panicking(text in ".{0,256}") {
        let _ = serde_json::from_str::<CreateSessionRequest>(&text);
        let _ = serde_json::from_str::<EventQuery>(&text);
        let _ = serde_json::from_str::<AuditRecord>(&text);
        let _ = text.parse::<ImageRef>();
        let _ = text.parse::<Timestamp>();
    }
}
