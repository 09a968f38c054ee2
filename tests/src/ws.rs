//! A WebSocket client for the PTY gateway, speaking the seed's JSON frames.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// One viewer of a terminal.
#[derive(Debug)]
pub struct Viewer {
    socket: WebSocketStream<TcpStream>,
    /// Terminal output received so far.
    pub output: Vec<u8>,
    /// Every non-stdout frame received, in order.
    pub frames: Vec<Value>,
    /// The close code, once closed.
    pub closed: Option<u16>,
    /// With flow control on ([`Viewer::acknowledge`]): `stdout` bytes consumed and acknowledged.
    acks: Option<(u64, u64)>,
}

/// How often a viewer with flow control acknowledges: every this many `stdout` bytes.
pub const ACK_EVERY: u64 = 16 * 1024;

/// How an HTTP request for the upgrade was answered when it was refused.
#[derive(Debug)]
pub struct Refused {
    /// The status.
    pub status: u16,
    /// The error body.
    pub body: Value,
}

impl Viewer {
    /// Connects to `ws_url` with `token` (and `cols`×`rows`).
    pub async fn connect(ws_url: &str, token: &str, cols: u16, rows: u16) -> Result<Self, Refused> {
        Self::connect_url(format!("{ws_url}?token={token}&cols={cols}&rows={rows}")).await
    }

    /// Attaches with `attach` (an attach answer), the output resumed at `from_offset`.
    pub async fn attach_from(attach: &Value, from_offset: u64) -> Self {
        let url = attach["ws_url"].as_str().expect("ws_url");
        let token = attach["token"].as_str().expect("token");
        Self::connect_url(format!(
            "{url}?token={token}&cols=80&rows=24&from_offset={from_offset}"
        ))
        .await
        .unwrap_or_else(|refused| panic!("attach refused: {} {}", refused.status, refused.body))
    }

    async fn connect_url(url: String) -> Result<Self, Refused> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let request = url.as_str().into_client_request().expect("a ws URL");
        let authority = request.uri().authority().expect("host:port").to_string();
        let tcp = TcpStream::connect(&authority)
            .await
            .expect("connecting to the gateway");
        // As browsers do: small frames (keystrokes, acknowledgements) go out at once instead of
        // waiting for the previous one's TCP ACK.
        tcp.set_nodelay(true).expect("TCP_NODELAY");
        match tokio_tungstenite::client_async(request, tcp).await {
            Ok((socket, _)) => Ok(Self {
                socket,
                output: Vec::new(),
                frames: Vec::new(),
                closed: None,
                acks: None,
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(Refused {
                status: response.status().as_u16(),
                body: response
                    .body()
                    .as_ref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null),
            }),
            Err(other) => panic!("attach failed: {other}"),
        }
    }

    /// Attaches with an `{ws_url, token}` the API handed out (80×24); panics if refused.
    pub async fn attach(attach: &Value) -> Self {
        let url = attach["ws_url"].as_str().expect("ws_url");
        let token = attach["token"].as_str().expect("token");
        Self::connect(url, token, 80, 24)
            .await
            .unwrap_or_else(|refused| panic!("attach refused: {} {}", refused.status, refused.body))
    }

    /// Turns on flow control: from now on the viewer acknowledges the output it consumed
    /// (`{"type":"ack","bytes":N}`), as the console does.
    pub fn acknowledge(&mut self) {
        self.acks.get_or_insert((0, 0));
    }

    /// Sends raw text (for malformed-frame tests).
    pub async fn send_text(&mut self, text: &str) {
        self.socket
            .send(Message::Text(text.to_owned().into()))
            .await
            .expect("sending");
    }

    /// Types `bytes`.
    pub async fn type_bytes(&mut self, bytes: &[u8]) {
        let frame = json!({"type": "stdin", "data_b64": B64.encode(bytes)});
        self.send_text(&frame.to_string()).await;
    }

    /// Resizes the terminal.
    pub async fn resize(&mut self, cols: u16, rows: u16) {
        let frame = json!({"type": "resize", "cols": cols, "rows": rows});
        self.send_text(&frame.to_string()).await;
    }

    /// Reads one message (`false` when the socket is closed or `within` passed).
    pub async fn read_one(&mut self, within: Duration) -> bool {
        let message = match tokio::time::timeout(within, self.socket.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(_) => {
                self.closed.get_or_insert(1006);
                return false;
            }
            Err(_) => return false,
        };
        match message {
            Message::Text(text) => {
                let frame: Value = serde_json::from_str(text.as_str()).expect("frames are JSON");
                if frame["type"] == "stdout" {
                    let data = B64
                        .decode(frame["data_b64"].as_str().expect("data_b64"))
                        .expect("base64");
                    self.output.extend_from_slice(&data);
                    if let Some((consumed, acked)) = &mut self.acks {
                        *consumed += data.len() as u64;
                        // The first output is acknowledged at once: from then on the node
                        // knows this viewer paces the shell.
                        if *acked == 0 || *consumed - *acked >= ACK_EVERY {
                            *acked = *consumed;
                            let ack = json!({"type": "ack", "bytes": *consumed}).to_string();
                            if self.socket.send(Message::Text(ack.into())).await.is_err() {
                                self.closed.get_or_insert(1006);
                                return false;
                            }
                        }
                    }
                } else {
                    self.frames.push(frame);
                }
                true
            }
            Message::Close(frame) => {
                self.closed = Some(frame.map_or(1005, |f| u16::from(f.code)));
                false
            }
            _ => true,
        }
    }

    /// Reads until the output contains `needle`; panics with what was seen after `within`.
    pub async fn expect_output(&mut self, needle: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while !String::from_utf8_lossy(&self.output).contains(needle) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || (!self.read_one(left).await && self.closed.is_some()) {
                panic!(
                    "no {needle:?} in the output within {within:?}; got:\n{}\nframes: {:?}",
                    String::from_utf8_lossy(&self.output),
                    self.frames
                );
            }
        }
    }

    /// Reads until a frame of `frame_type` arrives; returns it.
    pub async fn expect_frame(&mut self, frame_type: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(frame) = self.frames.iter().find(|f| f["type"] == frame_type) {
                return frame.clone();
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || (!self.read_one(left).await && self.closed.is_some()) {
                panic!(
                    "no {frame_type:?} frame within {within:?}; frames: {:?}, closed: {:?}",
                    self.frames, self.closed
                );
            }
        }
    }

    /// Reads until a `status` frame with this `state` arrives; returns it.
    pub async fn expect_status(&mut self, state: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(frame) = self
                .frames
                .iter()
                .find(|f| f["type"] == "status" && f["state"] == state)
            {
                return frame.clone();
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || (!self.read_one(left).await && self.closed.is_some()) {
                panic!(
                    "no {state:?} status within {within:?}; frames: {:?}, closed: {:?}",
                    self.frames, self.closed
                );
            }
        }
    }

    /// Reads until the socket closes; returns the close code.
    pub async fn expect_close(&mut self, within: Duration) -> u16 {
        let deadline = tokio::time::Instant::now() + within;
        while self.closed.is_none() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(
                !left.is_zero(),
                "not closed within {within:?}; frames: {:?}",
                self.frames
            );
            self.read_one(left).await;
        }
        self.closed.unwrap_or_default()
    }
}

/// The normal close code, for comparisons.
pub const NORMAL_CLOSE: u16 = 1000;
