//! Async read/write of length-prefixed messages over any byte stream: QUIC streams on both
//! sides of the link, the shim's Unix socket on the node. Behind the `io` feature, so the rest
//! of this crate stays free of I/O and the fuzz targets never build tokio.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::codec::{Decoder, WireError, encode};

/// Why reading a message failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream failed (reset, connection gone).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not a valid message; the stream is not trusted further.
    #[error("{0}")]
    Malformed(#[from] WireError),
}

/// Reads messages of one type after another from a byte stream.
#[derive(Debug)]
pub struct FramedReader<R> {
    inner: R,
    decoder: Decoder,
    buf: Box<[u8]>,
}

impl<R: AsyncRead + Unpin> FramedReader<R> {
    /// Reads from `inner` in pieces of up to 64 KiB.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            decoder: Decoder::new(),
            buf: vec![0; 64 * 1024].into_boxed_slice(),
        }
    }

    /// The next message, or `None` when the stream ended cleanly between messages.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ReadError> {
        loop {
            if let Some(message) = self.decoder.next_message()? {
                return Ok(Some(message));
            }
            let n = self.inner.read(&mut self.buf).await?;
            if n == 0 {
                self.decoder.finish()?;
                return Ok(None);
            }
            self.decoder.extend(&self.buf[..n]);
        }
    }

    /// The next message if it has already arrived whole, without reading: lets a relay merge
    /// what is waiting into one message, and send the first byte of a burst at once.
    pub fn next_buffered<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ReadError> {
        Ok(self.decoder.next_message()?)
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

/// Writes one message with its length prefix.
pub async fn write_message<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    message: &T,
) -> std::io::Result<()> {
    let bytes = encode(message).map_err(std::io::Error::other)?;
    writer.write_all(&bytes).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::PtyMessage;

    #[tokio::test]
    async fn messages_cross_a_byte_stream_in_pieces() {
        let (mut a, b) = tokio::io::duplex(7); // tiny buffer: every message arrives in pieces
        let writer = tokio::spawn(async move {
            for i in 0..50u8 {
                write_message(&mut a, &PtyMessage::Data(vec![i; usize::from(i) * 3]))
                    .await
                    .unwrap();
            }
        });
        let mut reader = FramedReader::new(b);
        for i in 0..50u8 {
            let message: PtyMessage = reader.next().await.unwrap().unwrap();
            assert_eq!(message, PtyMessage::Data(vec![i; usize::from(i) * 3]));
        }
        writer.await.unwrap();
        assert!(reader.next::<PtyMessage>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_message_is_an_error() {
        let (mut a, b) = tokio::io::duplex(64);
        let bytes = encode(&PtyMessage::Data(vec![1; 20])).unwrap();
        a.write_all(&bytes[..10]).await.unwrap();
        drop(a);
        let mut reader = FramedReader::new(b);
        assert!(matches!(
            reader.next::<PtyMessage>().await,
            Err(ReadError::Malformed(WireError::Truncated(_)))
        ));
    }
}
