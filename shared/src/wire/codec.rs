//! Length-prefixed postcard framing for QUIC streams, sans I/O.
//!
//! Each message is a 4-byte big-endian length, then that many bytes of postcard. The length is
//! checked against [`MAX_MESSAGE_BYTES`] before any of the body is buffered, so a peer cannot
//! make the other side allocate more than that. Async read/write loops live in the agent and
//! the coordinator; they feed bytes to a [`Decoder`] and write what [`encode`] returns.

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// The largest message body either side sends or accepts.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Why a message could not be encoded or decoded. Any of these closes the stream it came on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The length prefix announces more than [`MAX_MESSAGE_BYTES`].
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The announced or encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not a valid postcard encoding of the expected message (this includes
    /// values that fail validation, like an invalid node id).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The body decoded but left bytes unread.
    #[error("message has {0} trailing bytes")]
    TrailingBytes(usize),
    /// The stream ended in the middle of a message.
    #[error("stream ended {0} bytes into a message")]
    Truncated(usize),
}

/// Encodes `message` with its length prefix.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, WireError> {
    let mut out = postcard::to_extend(message, vec![0u8; LENGTH_PREFIX_BYTES])
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    let len = out.len() - LENGTH_PREFIX_BYTES;
    if len > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge {
            len,
            max: MAX_MESSAGE_BYTES,
        });
    }
    // `len` ≤ 1 MiB, so it fits the 4-byte prefix.
    out[..LENGTH_PREFIX_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Decodes exactly one message body (without its length prefix).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge {
            len: body.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    let (message, rest) =
        postcard::take_from_bytes(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    Ok(message)
}

/// Reassembles messages from a byte stream that arrives in arbitrary pieces.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Received bytes; those before `start` are already decoded.
    buffer: Vec<u8>,
    /// Where the next message begins. Consumed bytes are dropped only when they are at least
    /// half the buffer, so many small messages in one read cost linear, not quadratic, time.
    start: usize,
    /// Set after the first error: a stream with a bad message is not trusted further.
    failed: bool,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start * 2 >= self.buffer.len() {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    fn pending(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    /// How many bytes the next read may usefully bring: the rest of the current message, or
    /// a prefix. Lets a reader keep its buffer bounded.
    pub fn wanted(&self) -> usize {
        let pending = self.pending().len();
        match self.announced_len() {
            Some(len) => (LENGTH_PREFIX_BYTES + len).saturating_sub(pending),
            None => LENGTH_PREFIX_BYTES - pending.min(LENGTH_PREFIX_BYTES),
        }
        .max(1)
    }

    fn announced_len(&self) -> Option<usize> {
        let prefix: [u8; LENGTH_PREFIX_BYTES] =
            self.pending().get(..LENGTH_PREFIX_BYTES)?.try_into().ok()?;
        Some(u32::from_be_bytes(prefix) as usize)
    }

    /// The next whole message, `Ok(None)` if more bytes are needed, or the error that ends
    /// the stream. After an error every call returns an error.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, WireError> {
        if self.failed {
            return Err(WireError::Malformed("stream already failed".into()));
        }
        let Some(len) = self.announced_len() else {
            return Ok(None);
        };
        if len > MAX_MESSAGE_BYTES {
            self.failed = true;
            return Err(WireError::TooLarge {
                len,
                max: MAX_MESSAGE_BYTES,
            });
        }
        let end = LENGTH_PREFIX_BYTES + len;
        if self.pending().len() < end {
            return Ok(None);
        }
        let result = decode_body(&self.pending()[LENGTH_PREFIX_BYTES..end]);
        self.start += end;
        if self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        }
        if result.is_err() {
            self.failed = true;
        }
        result.map(Some)
    }

    /// Call when the stream has ended: an error if it stopped inside a message.
    pub fn finish(&self) -> Result<(), WireError> {
        match self.pending().len() {
            0 => Ok(()),
            n => Err(WireError::Truncated(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_at_a_time_reassembles() {
        let messages = vec!["one".to_owned(), String::new(), "three".repeat(100)];
        let mut stream = Vec::new();
        for m in &messages {
            stream.extend(encode(m).unwrap());
        }
        let mut decoder = Decoder::new();
        let mut got = Vec::new();
        for b in stream {
            decoder.extend(&[b]);
            while let Some(m) = decoder.next_message::<String>().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, messages);
        decoder.finish().unwrap();
    }

    #[test]
    fn oversize_prefix_fails_before_buffering_the_body() {
        let mut decoder = Decoder::new();
        decoder.extend(&((MAX_MESSAGE_BYTES as u32) + 1).to_be_bytes());
        assert_eq!(
            decoder.next_message::<String>().unwrap_err(),
            WireError::TooLarge {
                len: MAX_MESSAGE_BYTES + 1,
                max: MAX_MESSAGE_BYTES
            }
        );
        // The stream stays failed.
        assert!(decoder.next_message::<String>().is_err());
    }

    #[test]
    fn oversize_messages_are_not_encoded() {
        let big = vec![0u8; MAX_MESSAGE_BYTES];
        assert!(matches!(
            encode(&serde_bytes::ByteBuf::from(big)),
            Err(WireError::TooLarge { .. })
        ));
        let fits = vec![0u8; MAX_MESSAGE_BYTES - 8];
        assert!(encode(&serde_bytes::ByteBuf::from(fits)).is_ok());
    }

    #[test]
    fn trailing_and_truncated_bytes_are_errors() {
        let mut body = postcard::to_stdvec(&7u32).unwrap();
        body.push(0);
        assert_eq!(
            decode_body::<u32>(&body).unwrap_err(),
            WireError::TrailingBytes(1)
        );

        let mut decoder = Decoder::new();
        decoder.extend(&encode(&"hello").unwrap()[..6]);
        assert_eq!(decoder.next_message::<String>().unwrap(), None);
        assert_eq!(decoder.finish().unwrap_err(), WireError::Truncated(6));
        assert!(decoder.wanted() > 0);
    }
}
