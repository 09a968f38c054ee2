//! The agent's side of a shim connection (async, on the agent's tokio runtime).

use std::path::Path;

use fogshell_shared::wire::stream::{FramedReader, write_message};
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
    reader: FramedReader<OwnedReadHalf>,
}

/// Connects to the shim listening at `socket`.
pub async fn connect(socket: &Path) -> std::io::Result<(ShimWriter, ShimReader)> {
    let stream = UnixStream::connect(socket).await?;
    let (read, write) = stream.into_split();
    Ok((
        ShimWriter { half: write },
        ShimReader {
            reader: FramedReader::new(read),
        },
    ))
}

impl ShimWriter {
    /// Sends one request.
    pub async fn send(&mut self, request: &ShimRequest) -> std::io::Result<()> {
        write_message(&mut self.half, request).await
    }
}

impl ShimReader {
    /// The next event, or `None` when the shim closed the connection.
    pub async fn next_event(&mut self) -> std::io::Result<Option<ShimEvent>> {
        self.reader.next().await.map_err(std::io::Error::other)
    }

    /// The next event if it has already arrived, without waiting.
    pub fn next_buffered(&mut self) -> std::io::Result<Option<ShimEvent>> {
        self.reader.next_buffered().map_err(std::io::Error::other)
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
