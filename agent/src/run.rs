//! `fogshell-agent run`: an operator's smoke test, like `ctr run -t`. Starts one session on
//! this node with no coordinator, attaches it to the current terminal, and removes it when the
//! shell exits.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{SignalKind, signal};

use crate::runtime::{Runtime, RuntimeError, SessionRequest};
use crate::shim::protocol::{ShimEvent, ShimRequest};
use fogshell_term::{self as terminal, RawMode};

/// Runs the session to its end and returns the shell's exit status.
pub async fn run(runtime: &impl Runtime, request: SessionRequest) -> Result<i32, RuntimeError> {
    let session_id = request.session_id;
    runtime.allocate(&request).await?;
    let result = attach_here(runtime, &request).await;
    if let Err(error) = runtime.terminate(session_id).await {
        tracing::warn!(%session_id, %error, "could not remove the session");
    }
    result
}

async fn attach_here(
    runtime: &impl Runtime,
    request: &SessionRequest,
) -> Result<i32, RuntimeError> {
    let streams = runtime
        .attach_pty(request.session_id, terminal::size(), 0)
        .await?;
    let (mut input, mut output) = (streams.input, streams.output);
    let _raw = RawMode::enter().map_err(RuntimeError::io("setting the terminal to raw mode"))?;
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut winch = signal(SignalKind::window_change())
        .map_err(RuntimeError::io("watching for terminal resizes"))?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut stdin_open = true;
    let shim_error = |e: std::io::Error| RuntimeError::Shim(e.to_string());
    loop {
        tokio::select! {
            event = output.next_event() => match event.map_err(shim_error)? {
                Some(ShimEvent::Output { data, .. }) => {
                    stdout.write_all(&data).await.map_err(RuntimeError::io("writing output"))?;
                    stdout.flush().await.map_err(RuntimeError::io("writing output"))?;
                }
                Some(ShimEvent::Exited { code }) => return Ok(code),
                Some(_) => {}
                None => return Err(RuntimeError::Shim("the shim closed the terminal".into())),
            },
            n = stdin.read(&mut buf), if stdin_open => match n {
                // Input ended (a pipe, not a person): end the shell's input too.
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    input.send(&ShimRequest::Input(vec![0x04])).await.map_err(shim_error)?;
                }
                Ok(n) => input.send(&ShimRequest::Input(buf[..n].to_vec())).await.map_err(shim_error)?,
            },
            _ = winch.recv() => {
                input.send(&ShimRequest::Resize(terminal::size())).await.map_err(shim_error)?;
            }
        }
    }
}
