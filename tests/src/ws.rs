//! A WebSocket client for the PTY gateway, speaking the seed's JSON frames.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use fogshell_shared::ctrl_c::CtrlCHold;
use fogshell_shared::frame::ack_due;
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
    /// With flow control on ([`Viewer::acknowledge`]): `stdout` bytes acknowledged, and the
    /// output held after a Ctrl-C until the gateway's `flush` answer (as the console does).
    acks: Option<(u64, CtrlCHold)>,
    /// `stdout` payload bytes received, drawn or not.
    pub received: u64,
}

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

    /// Connects as a browser page at `origin` would (80×24).
    pub async fn connect_from(origin: &str, ws_url: &str, token: &str) -> Result<Self, Refused> {
        Self::connect_request(
            format!("{ws_url}?token={token}&cols=80&rows=24"),
            Some(origin),
        )
        .await
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
        Self::connect_request(url, None).await
    }

    async fn connect_request(url: String, origin: Option<&str>) -> Result<Self, Refused> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut request = url.as_str().into_client_request().expect("a ws URL");
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().expect("an origin header"));
        }
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
                received: 0,
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
        self.acks.get_or_insert((0, CtrlCHold::new()));
    }

    /// `stdout` bytes dropped as stale after this viewer's Ctrl-Cs.
    pub fn dropped(&self) -> u64 {
        self.acks.as_ref().map_or(0, |(_, hold)| hold.dropped())
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
        if let Some((_, hold)) = &mut self.acks {
            hold.sent(bytes, std::time::Instant::now());
        }
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
        let deadline = self.acks.as_ref().and_then(|(_, hold)| hold.deadline());
        let wait = match deadline {
            Some(deadline) => {
                within.min(deadline.saturating_duration_since(std::time::Instant::now()))
            }
            None => within,
        };
        let message = match tokio::time::timeout(wait, self.socket.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(_) => {
                self.closed.get_or_insert(1006);
                return false;
            }
            Err(_) => {
                // The answer to a Ctrl-C is late: draw what was held.
                if let Some((_, hold)) = &mut self.acks
                    && hold
                        .deadline()
                        .is_some_and(|deadline| std::time::Instant::now() >= deadline)
                {
                    let held = hold.release();
                    self.output.extend_from_slice(&held);
                    return self.send_ack().await;
                }
                return false;
            }
        };
        match message {
            Message::Text(text) => {
                let frame: Value = serde_json::from_str(text.as_str()).expect("frames are JSON");
                if frame["type"] == "stdout" {
                    let data = B64
                        .decode(frame["data_b64"].as_str().expect("data_b64"))
                        .expect("base64");
                    self.received += data.len() as u64;
                    match &mut self.acks {
                        Some((_, hold)) => {
                            let drawn = hold.received(&data);
                            self.output.extend_from_slice(&drawn);
                        }
                        None => self.output.extend_from_slice(&data),
                    }
                } else {
                    if frame["type"] == "flush"
                        && let Some((_, hold)) = &mut self.acks
                    {
                        let bytes = frame["bytes"].as_u64().expect("flush bytes");
                        let discard = frame["discard"].as_bool().expect("flush discard");
                        let drawn = hold.flush(bytes, discard);
                        self.output.extend_from_slice(&drawn);
                    }
                    self.frames.push(frame);
                }
                self.send_ack().await
            }
            Message::Close(frame) => {
                self.closed = Some(frame.map_or(1005, |f| u16::from(f.code)));
                false
            }
            _ => true,
        }
    }

    /// With flow control on, acknowledges what was consumed (drawn or dropped) since the last
    /// acknowledgement, as often as `fogshell_shared::frame::ack_due` says (the first output at
    /// once: from then on the node knows this viewer paces the shell). `false` if the socket
    /// is gone.
    async fn send_ack(&mut self) -> bool {
        let Some((acked, hold)) = &mut self.acks else {
            return true;
        };
        let consumed = hold.consumed();
        if ack_due(consumed, *acked) {
            *acked = consumed;
            let ack = json!({"type": "ack", "bytes": consumed}).to_string();
            if self.socket.send(Message::Text(ack.into())).await.is_err() {
                self.closed.get_or_insert(1006);
                return false;
            }
        }
        true
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
