//! The WebSocket PTY frames of interfaces-v1.md §1.3, one JSON text message each:
//!
//! ```text
//! client → gateway   {"type":"stdin","data_b64":"…"}   {"type":"resize","cols":80,"rows":24}
//! gateway → client   {"type":"stdout","data_b64":"…"}  {"type":"exit","code":0}
//!                    {"type":"status","state":"…","placement":{…}|null,"reason":"…"|null}
//!                    {"type":"error","code":"ECS_…","message":"…"}
//! ```
//!
//! Two extensions, for clients that want them: a client may acknowledge what it drew
//! (`{"type":"ack","bytes":N}`), and a client that does gets `{"type":"flush","bytes":N,
//! "discard":true|false}` after each `stdin` frame of its that carried Ctrl-C (see
//! [`ServerFrame::Flush`]).
//!
//! Decoding is written by hand over `serde_json::Value` rather than derived, so each way a frame
//! can be wrong has its own [`FrameError`] (and WebSocket close code) and nothing panics.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::error::ErrorCode;
use crate::placement::Placement;

/// The most bytes one `stdin` or `stdout` frame carries (before base64).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// The longest JSON text a frame may be: the base64 of a full payload plus room for the rest.
pub const MAX_FRAME_TEXT_BYTES: usize = MAX_PAYLOAD_BYTES.div_ceil(3) * 4 + 1024;

/// The range terminal columns and rows must fall in.
pub const TERM_DIMENSION: std::ops::RangeInclusive<u16> = 1..=1000;

/// A terminal size, checked to lie in [`TERM_DIMENSION`] on both axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "(u16, u16)", into = "(u16, u16)")]
pub struct TermSize {
    cols: u16,
    rows: u16,
}

impl TermSize {
    /// A terminal size, or `None` if either side is outside 1..=1000.
    pub fn new(cols: u16, rows: u16) -> Option<Self> {
        (TERM_DIMENSION.contains(&cols) && TERM_DIMENSION.contains(&rows))
            .then_some(Self { cols, rows })
    }

    /// Columns.
    pub fn cols(self) -> u16 {
        self.cols
    }

    /// Rows.
    pub fn rows(self) -> u16 {
        self.rows
    }
}

impl TryFrom<(u16, u16)> for TermSize {
    type Error = &'static str;
    fn try_from((cols, rows): (u16, u16)) -> Result<Self, Self::Error> {
        Self::new(cols, rows).ok_or("terminal size must be 1..=1000 on both axes")
    }
}

impl From<TermSize> for (u16, u16) {
    fn from(size: TermSize) -> Self {
        (size.cols, size.rows)
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for TermSize {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let cols = u.int_in_range(TERM_DIMENSION)?;
        let rows = u.int_in_range(TERM_DIMENSION)?;
        Ok(Self { cols, rows })
    }
}

/// The lifecycle states a `status` frame reports to the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    /// The gateway is reaching the node.
    Connecting,
    /// The shell is attached.
    Running,
    /// The node was lost; output has stopped.
    Interrupted,
    /// A new shell is being started elsewhere (failover).
    Resuming,
    /// The session runs again, at the placement the frame carries.
    Resumed,
    /// The session could not continue; the frame's reason says why.
    Failed,
}

impl StreamState {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "connecting" => Self::Connecting,
            "running" => Self::Running,
            "interrupted" => Self::Interrupted,
            "resuming" => Self::Resuming,
            "resumed" => Self::Resumed,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// A frame the browser (or any client) sends to the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ClientFrame {
    /// Keystrokes and pasted text, raw bytes.
    Stdin(StdinData),
    /// The terminal's new size.
    Resize(TermSize),
    /// Flow control, optional (an extension of the seed's frames; clients that never send it
    /// get output as fast as the connection takes it): `{"type":"ack","bytes":N}` says the
    /// client has consumed — written to its screen — the first `N` bytes of `stdout` payload
    /// this socket carried. The shell then runs at most a small window ahead of the client,
    /// so a flood stopped by Ctrl-C leaves little queued.
    Ack {
        /// Consumed `stdout` payload bytes on this socket, cumulative.
        bytes: u64,
    },
}

/// How often a client that acknowledges does: at its first output, then every this many
/// `stdout` bytes consumed.
pub const ACK_EVERY: u64 = 16 * 1024;

/// Whether a client that has acknowledged `acked` bytes and consumed `consumed` should send
/// `{"type":"ack","bytes":consumed}` now.
pub fn ack_due(consumed: u64, acked: u64) -> bool {
    consumed > acked && (acked == 0 || consumed - acked >= ACK_EVERY)
}

/// Input bytes, at most [`MAX_PAYLOAD_BYTES`].
pub type StdinData = Payload;

/// Bytes of a `stdin` or `stdout` frame, at most [`MAX_PAYLOAD_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Payload(Vec<u8>);

impl Payload {
    /// Wraps `bytes`, or gives them back if they are over [`MAX_PAYLOAD_BYTES`].
    pub fn new(bytes: Vec<u8>) -> Result<Self, Vec<u8>> {
        if bytes.len() <= MAX_PAYLOAD_BYTES {
            Ok(Self(bytes))
        } else {
            Err(bytes)
        }
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Takes the bytes out.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Payload {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let len = u.int_in_range(0..=MAX_PAYLOAD_BYTES.min(u.len()))?;
        Ok(Self(u.bytes(len)?.to_vec()))
    }
}

/// A frame the gateway sends to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ServerFrame {
    /// Terminal output, raw bytes.
    Stdout(Payload),
    /// The shell exited with this code; a normal close follows.
    Exit {
        /// Exit status (128 + signal number for a signal, as shells report it).
        code: i32,
    },
    /// A lifecycle change the user should see.
    Status {
        /// The new state.
        state: StreamState,
        /// Where the session runs now, when that is known (always on `resumed`).
        placement: Option<Placement>,
        /// Why, in words (`node fog-a lost`), when there is a reason to give.
        reason: Option<String>,
        /// On `running` and `resumed`: the offset, in the shell's output since it started, of
        /// the next `stdout` byte. A viewer that counts from here can reconnect with
        /// `from_offset` and miss nothing, repeat nothing. (An addition to the seed's frame,
        /// left out when there is no offset to give.)
        offset: Option<u64>,
    },
    /// The answer to a Ctrl-C (byte 0x03) in this client's `stdin`, sent only to clients that
    /// acknowledge output (an extension of the seed's frames): it has reached the terminal.
    /// With `discard`, the terminal discarded the output it still held, as a tty does on an
    /// interrupt (ISIG without NOFLSH): the `stdout` this socket carried before its byte
    /// `bytes` was produced before the interrupt and had not reached a screen, so a client
    /// that held back what arrived after its Ctrl-C may drop that part. Without `discard` (a
    /// program in raw mode took the byte as a key), nothing is stale and held output is drawn.
    Flush {
        /// The position, in `stdout` payload bytes on this socket, of the first byte produced
        /// after the interrupt.
        bytes: u64,
        /// Whether the terminal flushed its output.
        discard: bool,
    },
    /// The gateway refused something the client sent, or cannot go on.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// What went wrong, for a person.
        message: String,
    },
}

/// Why a frame could not be decoded. Each maps to a WebSocket close code
/// ([`FrameError::close_code`]) and is safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The text is longer than [`MAX_FRAME_TEXT_BYTES`].
    #[error("frame is {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The text is not JSON.
    #[error("frame is not valid JSON")]
    NotJson,
    /// The JSON is not an object.
    #[error("frame must be a JSON object")]
    NotAnObject,
    /// The object has no string `type`.
    #[error("frame has no string \"type\" field")]
    MissingType,
    /// `type` names no frame this side accepts.
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
    /// A field the frame's type requires is absent.
    #[error("frame of type {frame_type:?} lacks field {field:?}")]
    MissingField {
        /// The frame's type.
        frame_type: &'static str,
        /// The absent field.
        field: &'static str,
    },
    /// A field has the wrong JSON type or an unknown value.
    #[error("field {field:?} must be {expected}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// `data_b64` is not standard base64.
    #[error("data_b64 is not valid base64")]
    BadBase64,
    /// The decoded payload is over [`MAX_PAYLOAD_BYTES`].
    #[error("payload is {len} bytes, more than the {max} allowed")]
    PayloadTooLarge {
        /// Its decoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `cols` or `rows` is outside 1..=1000.
    #[error("terminal size {cols}x{rows} is outside 1..=1000")]
    SizeOutOfRange {
        /// The columns asked for.
        cols: u64,
        /// The rows asked for.
        rows: u64,
    },
}

impl FrameError {
    /// The WebSocket close code (RFC 6455 §7.4.1) to close with: 1009 for oversize frames,
    /// 1007 for everything else that is malformed.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::TooLarge { .. } | Self::PayloadTooLarge { .. } => 1009,
            _ => 1007,
        }
    }
}

/// The shape common to both directions: a size check, an object, a `type`.
fn parse_object(text: &str) -> Result<(Map<String, Value>, String), FrameError> {
    if text.len() > MAX_FRAME_TEXT_BYTES {
        return Err(FrameError::TooLarge {
            len: text.len(),
            max: MAX_FRAME_TEXT_BYTES,
        });
    }
    let value: Value = serde_json::from_str(text).map_err(|_| FrameError::NotJson)?;
    let Value::Object(mut object) = value else {
        return Err(FrameError::NotAnObject);
    };
    let Some(Value::String(frame_type)) = object.remove("type") else {
        return Err(FrameError::MissingType);
    };
    Ok((object, frame_type))
}

/// Keeps an unknown type short in the error: it is echoed back to the client and logged.
fn unknown_type(frame_type: &str) -> FrameError {
    FrameError::UnknownType(frame_type.chars().take(32).collect())
}

fn field<'a>(
    object: &'a Map<String, Value>,
    frame_type: &'static str,
    field: &'static str,
) -> Result<&'a Value, FrameError> {
    object
        .get(field)
        .ok_or(FrameError::MissingField { frame_type, field })
}

fn payload_field(
    object: &Map<String, Value>,
    frame_type: &'static str,
) -> Result<Payload, FrameError> {
    let Value::String(text) = field(object, frame_type, "data_b64")? else {
        return Err(FrameError::InvalidField {
            field: "data_b64",
            expected: "a base64 string",
        });
    };
    // Checked before decoding so an oversize payload costs no allocation.
    let max_encoded = MAX_PAYLOAD_BYTES.div_ceil(3) * 4;
    if text.len() > max_encoded {
        return Err(FrameError::PayloadTooLarge {
            len: text.len() / 4 * 3,
            max: MAX_PAYLOAD_BYTES,
        });
    }
    let bytes = BASE64
        .decode(text.as_bytes())
        .map_err(|_| FrameError::BadBase64)?;
    Payload::new(bytes).map_err(|bytes| FrameError::PayloadTooLarge {
        len: bytes.len(),
        max: MAX_PAYLOAD_BYTES,
    })
}

fn integer_field(
    object: &Map<String, Value>,
    frame_type: &'static str,
    name: &'static str,
) -> Result<Option<u64>, FrameError> {
    match field(object, frame_type, name)? {
        Value::Number(n) => Ok(n.as_u64()),
        _ => Err(FrameError::InvalidField {
            field: name,
            expected: "an integer",
        }),
    }
}

impl ClientFrame {
    /// Decodes a client's text message.
    pub fn decode(text: &str) -> Result<Self, FrameError> {
        let (object, frame_type) = parse_object(text)?;
        match frame_type.as_str() {
            "stdin" => Ok(Self::Stdin(payload_field(&object, "stdin")?)),
            "resize" => {
                // Negative or fractional sizes read as `None` and are out of range, as is 0.
                let cols = integer_field(&object, "resize", "cols")?;
                let rows = integer_field(&object, "resize", "rows")?;
                let out_of_range = || FrameError::SizeOutOfRange {
                    cols: cols.unwrap_or(0),
                    rows: rows.unwrap_or(0),
                };
                let as_u16 = |n: Option<u64>| n.and_then(|n| u16::try_from(n).ok());
                let (Some(c), Some(r)) = (as_u16(cols), as_u16(rows)) else {
                    return Err(out_of_range());
                };
                TermSize::new(c, r)
                    .map(Self::Resize)
                    .ok_or_else(out_of_range)
            }
            "ack" => match integer_field(&object, "ack", "bytes")? {
                Some(bytes) => Ok(Self::Ack { bytes }),
                None => Err(FrameError::InvalidField {
                    field: "bytes",
                    expected: "a non-negative integer",
                }),
            },
            other => Err(unknown_type(other)),
        }
    }

    /// Encodes the frame as the JSON text the gateway expects.
    pub fn encode(&self) -> String {
        match self {
            Self::Stdin(data) => data_frame("stdin", data.as_bytes()),
            Self::Resize(size) => format!(
                r#"{{"type":"resize","cols":{},"rows":{}}}"#,
                size.cols, size.rows
            ),
            Self::Ack { bytes } => format!(r#"{{"type":"ack","bytes":{bytes}}}"#),
        }
    }
}

// Field order is fixed by these structs (`type` first), whatever serde_json features other
// crates turn on.
#[derive(Serialize)]
struct StatusOut<'a> {
    #[serde(rename = "type")]
    frame_type: &'static str,
    state: StreamState,
    placement: Option<&'a Placement>,
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    #[serde(rename = "type")]
    frame_type: &'static str,
    code: ErrorCode,
    message: &'a str,
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serializing these plain structs into a String cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// `{"type":…,"data_b64":…}` written straight into one string: the output path runs for every
/// PTY read, so it skips building a `Value`.
fn data_frame(frame_type: &str, bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4 + 32);
    out.push_str(r#"{"type":""#);
    out.push_str(frame_type);
    out.push_str(r#"","data_b64":""#);
    BASE64.encode_string(bytes, &mut out);
    out.push_str(r#""}"#);
    out
}

impl ServerFrame {
    /// Splits terminal output into `stdout` frames of at most [`MAX_PAYLOAD_BYTES`] each.
    pub fn stdout_frames(bytes: &[u8]) -> impl Iterator<Item = ServerFrame> + '_ {
        bytes
            .chunks(MAX_PAYLOAD_BYTES)
            .map(|chunk| ServerFrame::Stdout(Payload(chunk.to_vec())))
    }

    /// Encodes the frame as JSON text.
    pub fn encode(&self) -> String {
        match self {
            Self::Stdout(data) => data_frame("stdout", data.as_bytes()),
            Self::Exit { code } => format!(r#"{{"type":"exit","code":{code}}}"#),
            Self::Flush { bytes, discard } => {
                format!(r#"{{"type":"flush","bytes":{bytes},"discard":{discard}}}"#)
            }
            Self::Status {
                state,
                placement,
                reason,
                offset,
            } => to_json(&StatusOut {
                frame_type: "status",
                state: *state,
                placement: placement.as_ref(),
                reason: reason.as_deref(),
                offset: *offset,
            }),
            Self::Error { code, message } => to_json(&ErrorOut {
                frame_type: "error",
                code: *code,
                message,
            }),
        }
    }

    /// Decodes a gateway's text message (for clients and tests written in Rust).
    pub fn decode(text: &str) -> Result<Self, FrameError> {
        let (object, frame_type) = parse_object(text)?;
        match frame_type.as_str() {
            "stdout" => Ok(Self::Stdout(payload_field(&object, "stdout")?)),
            "exit" => {
                let code = match field(&object, "exit", "code")? {
                    Value::Number(n) => n.as_i64().and_then(|n| i32::try_from(n).ok()),
                    _ => None,
                };
                code.map(|code| Self::Exit { code })
                    .ok_or(FrameError::InvalidField {
                        field: "code",
                        expected: "a 32-bit integer",
                    })
            }
            "status" => {
                let state = match field(&object, "status", "state")? {
                    Value::String(s) => StreamState::parse(s),
                    _ => None,
                }
                .ok_or(FrameError::InvalidField {
                    field: "state",
                    expected: "a known stream state",
                })?;
                let placement =
                    match object.get("placement") {
                        None | Some(Value::Null) => None,
                        Some(v) => Some(Placement::deserialize(v).map_err(|_| {
                            FrameError::InvalidField {
                                field: "placement",
                                expected: "a placement object",
                            }
                        })?),
                    };
                let reason = optional_string(&object, "reason")?;
                let offset = match object.get("offset") {
                    None | Some(Value::Null) => None,
                    Some(Value::Number(n)) => Some(n.as_u64().ok_or(FrameError::InvalidField {
                        field: "offset",
                        expected: "a non-negative integer",
                    })?),
                    Some(_) => {
                        return Err(FrameError::InvalidField {
                            field: "offset",
                            expected: "a non-negative integer",
                        });
                    }
                };
                Ok(Self::Status {
                    state,
                    placement,
                    reason,
                    offset,
                })
            }
            "flush" => {
                let bytes =
                    integer_field(&object, "flush", "bytes")?.ok_or(FrameError::InvalidField {
                        field: "bytes",
                        expected: "a non-negative integer",
                    })?;
                let discard = match field(&object, "flush", "discard")? {
                    Value::Bool(discard) => *discard,
                    _ => {
                        return Err(FrameError::InvalidField {
                            field: "discard",
                            expected: "true or false",
                        });
                    }
                };
                Ok(Self::Flush { bytes, discard })
            }
            "error" => {
                let code =
                    ErrorCode::deserialize(field(&object, "error", "code")?).map_err(|_| {
                        FrameError::InvalidField {
                            field: "code",
                            expected: "an ECS_ error code",
                        }
                    })?;
                let message = optional_string(&object, "message")?.unwrap_or_default();
                Ok(Self::Error { code, message })
            }
            other => Err(unknown_type(other)),
        }
    }
}

fn optional_string(
    object: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, FrameError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(FrameError::InvalidField {
            field: name,
            expected: "a string or null",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_come_at_the_first_output_then_every_ack_every_bytes() {
        assert!(!ack_due(0, 0), "nothing consumed, nothing to say");
        assert!(ack_due(1, 0), "the first output at once");
        assert!(!ack_due(ACK_EVERY, 1));
        assert!(ack_due(ACK_EVERY + 1, 1));
        assert!(!ack_due(5, 9), "never backwards");
    }

    #[test]
    fn client_frames_match_the_seed_word_for_word() {
        let stdin = ClientFrame::decode(r#"{"type":"stdin","data_b64":"ZWNobyBoaQ0="}"#).unwrap();
        assert_eq!(stdin, ClientFrame::Stdin(Payload(b"echo hi\r".to_vec())));
        assert_eq!(
            stdin.encode(),
            r#"{"type":"stdin","data_b64":"ZWNobyBoaQ0="}"#
        );
        let resize = ClientFrame::decode(r#"{"type":"resize","cols":120,"rows":40}"#).unwrap();
        assert_eq!(resize, ClientFrame::Resize(TermSize::new(120, 40).unwrap()));
        assert_eq!(resize.encode(), r#"{"type":"resize","cols":120,"rows":40}"#);
    }

    #[test]
    fn server_frames_match_the_seed_word_for_word() {
        let out = ServerFrame::Stdout(Payload(b"hi\r\n".to_vec()));
        assert_eq!(out.encode(), r#"{"type":"stdout","data_b64":"aGkNCg=="}"#);
        let exit = ServerFrame::Exit { code: 130 };
        assert_eq!(exit.encode(), r#"{"type":"exit","code":130}"#);
        let flush = ServerFrame::Flush {
            bytes: 65_536,
            discard: true,
        };
        assert_eq!(
            flush.encode(),
            r#"{"type":"flush","bytes":65536,"discard":true}"#
        );
        assert_eq!(ServerFrame::decode(&flush.encode()), Ok(flush));
        for (text, field) in [
            (r#"{"type":"flush","bytes":-1,"discard":true}"#, "bytes"),
            (r#"{"type":"flush","bytes":1,"discard":"yes"}"#, "discard"),
        ] {
            assert!(
                matches!(
                    ServerFrame::decode(text),
                    Err(FrameError::InvalidField { field: f, .. }) if f == field
                ),
                "{text}"
            );
        }
        let status = ServerFrame::Status {
            state: StreamState::Interrupted,
            placement: None,
            reason: Some("node fog-a lost".into()),
            offset: None,
        };
        assert_eq!(
            status.encode(),
            r#"{"type":"status","state":"interrupted","placement":null,"reason":"node fog-a lost"}"#
        );
        let running = ServerFrame::Status {
            state: StreamState::Running,
            placement: None,
            reason: None,
            offset: Some(4096),
        };
        assert_eq!(
            running.encode(),
            r#"{"type":"status","state":"running","placement":null,"reason":null,"offset":4096}"#
        );
        assert_eq!(ServerFrame::decode(&running.encode()).unwrap(), running);
        let error = ServerFrame::Error {
            code: ErrorCode::InvalidRequest,
            message: "bad frame".into(),
        };
        assert_eq!(
            error.encode(),
            r#"{"type":"error","code":"ECS_INVALID_REQUEST","message":"bad frame"}"#
        );
        for frame in [out, exit, status, error] {
            assert_eq!(ServerFrame::decode(&frame.encode()).unwrap(), frame);
        }
    }

    #[test]
    fn each_malformation_has_its_own_error() {
        let cases: &[(&str, FrameError)] = &[
            ("not json", FrameError::NotJson),
            ("[1,2]", FrameError::NotAnObject),
            (r#"{"data_b64":"aGk="}"#, FrameError::MissingType),
            (r#"{"type":7}"#, FrameError::MissingType),
            (
                r#"{"type":"shout"}"#,
                FrameError::UnknownType("shout".into()),
            ),
            // Server-only frames are unknown to the client decoder.
            (
                r#"{"type":"stdout","data_b64":""}"#,
                FrameError::UnknownType("stdout".into()),
            ),
            (
                r#"{"type":"stdin"}"#,
                FrameError::MissingField {
                    frame_type: "stdin",
                    field: "data_b64",
                },
            ),
            (
                r#"{"type":"stdin","data_b64":5}"#,
                FrameError::InvalidField {
                    field: "data_b64",
                    expected: "a base64 string",
                },
            ),
            (
                r#"{"type":"stdin","data_b64":"!!!"}"#,
                FrameError::BadBase64,
            ),
            (
                r#"{"type":"resize","cols":80}"#,
                FrameError::MissingField {
                    frame_type: "resize",
                    field: "rows",
                },
            ),
            (
                r#"{"type":"resize","cols":"80","rows":24}"#,
                FrameError::InvalidField {
                    field: "cols",
                    expected: "an integer",
                },
            ),
            (
                r#"{"type":"resize","cols":0,"rows":24}"#,
                FrameError::SizeOutOfRange { cols: 0, rows: 24 },
            ),
            (
                r#"{"type":"resize","cols":80,"rows":1001}"#,
                FrameError::SizeOutOfRange {
                    cols: 80,
                    rows: 1001,
                },
            ),
            (
                r#"{"type":"resize","cols":-3,"rows":24}"#,
                FrameError::SizeOutOfRange { cols: 0, rows: 24 },
            ),
            (
                r#"{"type":"resize","cols":80.5,"rows":24}"#,
                FrameError::SizeOutOfRange { cols: 0, rows: 24 },
            ),
            (
                r#"{"type":"resize","cols":99999999999999999999,"rows":24}"#,
                FrameError::SizeOutOfRange { cols: 0, rows: 24 },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(&ClientFrame::decode(text).unwrap_err(), want, "{text}");
        }
    }

    #[test]
    fn limits_hold_at_their_edges() {
        let full = vec![0xA5; MAX_PAYLOAD_BYTES];
        let text = ClientFrame::Stdin(Payload(full.clone())).encode();
        assert!(text.len() <= MAX_FRAME_TEXT_BYTES);
        assert_eq!(
            ClientFrame::decode(&text).unwrap(),
            ClientFrame::Stdin(Payload(full))
        );

        let over = data_frame("stdin", &vec![0; MAX_PAYLOAD_BYTES + 1]);
        let err = ClientFrame::decode(&over).unwrap_err();
        assert!(matches!(err, FrameError::PayloadTooLarge { .. }), "{err}");
        assert_eq!(err.close_code(), 1009);

        let huge = format!(
            r#"{{"type":"stdin","data_b64":"{}"}}"#,
            "A".repeat(MAX_FRAME_TEXT_BYTES)
        );
        let err = ClientFrame::decode(&huge).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
        assert_eq!(FrameError::NotJson.close_code(), 1007);

        assert!(TermSize::new(1000, 1).is_some());
        assert!(TermSize::new(1001, 1).is_none());
    }

    #[test]
    fn stdout_is_chunked_to_the_payload_cap() {
        let bytes = vec![1u8; MAX_PAYLOAD_BYTES * 2 + 5];
        let frames: Vec<_> = ServerFrame::stdout_frames(&bytes).collect();
        assert_eq!(frames.len(), 3);
        let total: usize = frames
            .iter()
            .map(|f| match f {
                ServerFrame::Stdout(p) => p.as_bytes().len(),
                _ => 0,
            })
            .sum();
        assert_eq!(total, bytes.len());
    }

    #[test]
    fn unknown_types_are_truncated_in_errors() {
        let long = format!(r#"{{"type":"{}"}}"#, "x".repeat(500));
        match ClientFrame::decode(&long).unwrap_err() {
            FrameError::UnknownType(t) => assert_eq!(t.len(), 32),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn extra_fields_are_ignored_for_forward_compatibility() {
        let f = ClientFrame::decode(r#"{"type":"resize","cols":80,"rows":24,"seq":9}"#).unwrap();
        assert_eq!(f, ClientFrame::Resize(TermSize::new(80, 24).unwrap()));
    }

    #[test]
    fn acks_carry_a_byte_count() {
        let ack = ClientFrame::decode(r#"{"type":"ack","bytes":65536}"#).unwrap();
        assert_eq!(ack, ClientFrame::Ack { bytes: 65536 });
        assert_eq!(ClientFrame::decode(&ack.encode()), Ok(ack));
        for bad in [
            r#"{"type":"ack"}"#,
            r#"{"type":"ack","bytes":-1}"#,
            r#"{"type":"ack","bytes":"9"}"#,
        ] {
            assert!(ClientFrame::decode(bad).is_err(), "{bad}");
        }
    }
}
