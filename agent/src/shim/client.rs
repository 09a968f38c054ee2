//! The agent's side of a shim connection (async, on the agent's tokio runtime).

use std::path::Path;

use fogshell_shared::wire::{Decoder, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::protocol::{ShimEvent, ShimRequest};

/// Sends requests to a shim.
#[derive(Debug)]
pub struct ShimWriter {
    half: OwnedWriteHalf,
}

/// Receives a shim's events.
#[derive(Debug)]
pub struct ShimReader {
    half: OwnedReadHalf,
    decoder: Decoder,
    buf: Vec<u8>,
}

/// Connects to the shim listening at `socket`.
pub async fn connect(socket: &Path) -> std::io::Result<(ShimWriter, ShimReader)> {
    let stream = UnixStream::connect(socket).await?;
    let (read, write) = stream.into_split();
    Ok((
        ShimWriter { half: write },
        ShimReader {
            half: read,
            decoder: Decoder::new(),
            buf: vec![0; 64 * 1024],
        },
    ))
}

impl ShimWriter {
    /// Sends one request.
    pub async fn send(&mut self, request: &ShimRequest) -> std::io::Result<()> {
        let bytes = encode(request).map_err(std::io::Error::other)?;
        self.half.write_all(&bytes).await
    }
}

impl ShimReader {
    /// The next event, or `None` when the shim closed the connection.
    pub async fn next_event(&mut self) -> std::io::Result<Option<ShimEvent>> {
        loop {
            if let Some(event) = self
                .decoder
                .next_message::<ShimEvent>()
                .map_err(std::io::Error::other)?
            {
                return Ok(Some(event));
            }
            let n = self.half.read(&mut self.buf).await?;
            if n == 0 {
                self.decoder.finish().map_err(std::io::Error::other)?;
                return Ok(None);
            }
            self.decoder.extend(&self.buf[..n]);
        }
    }
}

/// One request, one answer, on a fresh connection (status checks, kill, release).
pub async fn request(socket: &Path, request: &ShimRequest) -> std::io::Result<Option<ShimEvent>> {
    let (mut writer, mut reader) = connect(socket).await?;
    writer.send(request).await?;
    match request {
        ShimRequest::Status => reader.next_event().await,
        _ => Ok(None),
    }
}
