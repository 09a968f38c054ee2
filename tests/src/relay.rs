//! A userspace UDP relay that delays every datagram, for the placement test bed. This kernel
//! has neither netem nor fq, so a node's link latency is made here: the agent dials the relay,
//! the relay forwards to the coordinator, and each datagram waits `delay` in each direction.
//! The coordinator sees the delay only through its own QUIC RTT measurement.
//!
//! One relay carries one agent (its first sender is the only client). Order is kept: every
//! datagram waits the same time, in a FIFO per direction. The relay can also cut the link
//! (drop everything) and restore it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A running relay; stopped when dropped.
#[derive(Debug)]
pub struct DelayRelay {
    /// Where the agent dials.
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// Sends what arrives on `from` out through `send` after `delay`, in order.
async fn delayed_sender<F: std::future::Future<Output = ()>>(
    mut from: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
    send: impl Fn(Vec<u8>) -> F,
) {
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    loop {
        let next_due = queue.front().map(|(due, _)| *due);
        tokio::select! {
            received = from.recv() => match received {
                Some(item) => queue.push_back(item),
                None => return,
            },
            () = async {
                match next_due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some((_, datagram)) = queue.pop_front() {
                    send(datagram).await;
                }
            }
        }
    }
}

impl DelayRelay {
    /// Starts a relay on loopback to `upstream`, delaying each direction by `delay`.
    pub fn start(upstream: SocketAddr, delay: Duration) -> Self {
        Self::start_at("127.0.0.1", upstream, delay)
    }

    /// Starts a relay listening on `bind_ip` (a free port) to `upstream`.
    pub fn start_at(bind_ip: &str, upstream: SocketAddr, delay: Duration) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the relay");
        let cut = Arc::new(AtomicBool::new(false));
        // Made without blocking, so a relay can start inside a test's own runtime.
        let bind = |ip: &str| {
            let socket = std::net::UdpSocket::bind((ip, 0)).expect("bind");
            socket.set_nonblocking(true).expect("non-blocking");
            socket
        };
        let (downstream, upstream_socket) = (bind(bind_ip), bind("127.0.0.1"));
        upstream_socket
            .connect(upstream)
            .expect("the coordinator's address");
        let addr = downstream.local_addr().expect("local address");
        {
            let _context = runtime.enter();
            let downstream = Arc::new(UdpSocket::from_std(downstream).expect("tokio socket"));
            let upstream_socket =
                Arc::new(UdpSocket::from_std(upstream_socket).expect("tokio socket"));
            let client: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();

            // agent → coordinator
            let (up_tx, up_rx) = mpsc::unbounded_channel();
            let to_upstream = Arc::clone(&upstream_socket);
            tokio::spawn(delayed_sender(up_rx, move |datagram| {
                let socket = Arc::clone(&to_upstream);
                async move {
                    let _ = socket.send(&datagram).await;
                }
            }));
            let (from_agent, seen, dropping) = (
                Arc::clone(&downstream),
                Arc::clone(&client),
                Arc::clone(&cut),
            );
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 65_536];
                while let Ok((n, from)) = from_agent.recv_from(&mut buffer).await {
                    *seen.lock().unwrap() = Some(from);
                    if !dropping.load(Ordering::Relaxed) {
                        let _ = up_tx.send((Instant::now() + delay, buffer[..n].to_vec()));
                    }
                }
            });

            // coordinator → agent
            let (down_tx, down_rx) = mpsc::unbounded_channel();
            let (to_agent, whom) = (Arc::clone(&downstream), Arc::clone(&client));
            tokio::spawn(delayed_sender(down_rx, move |datagram| {
                let (socket, whom) = (Arc::clone(&to_agent), Arc::clone(&whom));
                async move {
                    let target = *whom.lock().unwrap();
                    if let Some(target) = target {
                        let _ = socket.send_to(&datagram, target).await;
                    }
                }
            }));
            let dropping = Arc::clone(&cut);
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 65_536];
                while let Ok(n) = upstream_socket.recv(&mut buffer).await {
                    if !dropping.load(Ordering::Relaxed) {
                        let _ = down_tx.send((Instant::now() + delay, buffer[..n].to_vec()));
                    }
                }
            });
        }
        Self {
            addr,
            cut,
            runtime: Some(runtime),
        }
    }

    /// Drops every datagram both ways until [`DelayRelay::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }

    /// Carries datagrams again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::Relaxed);
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_arrive_in_order_after_the_delay_each_way() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let echo = runtime.block_on(UdpSocket::bind("127.0.0.1:0")).unwrap();
        let echo_addr = echo.local_addr().unwrap();
        runtime.spawn(async move {
            let mut buffer = [0u8; 1500];
            while let Ok((n, from)) = echo.recv_from(&mut buffer).await {
                let _ = echo.send_to(&buffer[..n], from).await;
            }
        });
        let relay = DelayRelay::start(echo_addr, Duration::from_millis(20));
        runtime.block_on(async {
            let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            client.connect(relay.addr).await.unwrap();
            let start = std::time::Instant::now();
            for i in 0u8..5 {
                client.send(&[i]).await.unwrap();
            }
            let mut got = Vec::new();
            let mut buffer = [0u8; 16];
            while got.len() < 5 {
                let n = client.recv(&mut buffer).await.unwrap();
                got.extend_from_slice(&buffer[..n]);
            }
            let round_trip = start.elapsed();
            assert_eq!(got, [0, 1, 2, 3, 4]);
            assert!(round_trip >= Duration::from_millis(40), "{round_trip:?}");

            relay.cut();
            client.send(&[9]).await.unwrap();
            let lost =
                tokio::time::timeout(Duration::from_millis(200), client.recv(&mut buffer)).await;
            assert!(lost.is_err(), "a cut link carried a datagram");
        });
    }
}
