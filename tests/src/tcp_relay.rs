//! A userspace TCP relay that delays every byte, for the user's side of a terminal: the
//! browser's WebSocket to a gateway crosses a link of its own (user↔fog, user↔coordinator),
//! and this kernel has no netem to delay it. Each chunk read waits `delay` before it is
//! written on, in order, in each direction, so a relay of `d` adds `2d` to a round trip.
//!
//! The relay can also cut the link as a failed network does: from then on nothing moves in
//! either direction and new connections are taken but never answered, until
//! [`TcpDelayRelay::restore`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// A running relay; stopped when dropped.
#[derive(Debug)]
pub struct TcpDelayRelay {
    /// Where clients connect.
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// Waits while the link is cut.
async fn while_cut(cut: &mut watch::Receiver<bool>) {
    let _ = cut.wait_for(|cut| !*cut).await;
}

/// Copies `from` to `to`, each chunk `delay` later, pausing while cut.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    cut: watch::Receiver<bool>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let mut reading_cut = cut.clone();
    let reader = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            while_cut(&mut reading_cut).await;
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buffer[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    let mut writing_cut = cut;
    let writer = async move {
        let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
        loop {
            let item = match queue.pop_front() {
                Some(item) => item,
                None => match rx.recv().await {
                    Some(item) => item,
                    None => break,
                },
            };
            tokio::time::sleep_until(item.0).await;
            while_cut(&mut writing_cut).await;
            if to.write_all(&item.1).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                queue.push_back(more);
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

impl TcpDelayRelay {
    /// Starts a relay listening on `bind_ip` (a free port) to `upstream`, delaying each
    /// direction by `delay`.
    pub fn start_at(bind_ip: &str, upstream: SocketAddr, delay: Duration) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the relay");
        let listener = std::net::TcpListener::bind((bind_ip, 0)).expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("local address");
        let (cut, cut_watch) = watch::channel(false);
        {
            let _context = runtime.enter();
            let listener = TcpListener::from_std(listener).expect("tokio listener");
            let cut_watch = Arc::new(cut_watch);
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let cut = (*cut_watch).clone();
                    tokio::spawn(async move {
                        let mut waiting = cut.clone();
                        // A connection made while cut is held, unanswered, as a dead link does.
                        while_cut(&mut waiting).await;
                        let Ok(server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let _ = (client.set_nodelay(true), server.set_nodelay(true));
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::join!(
                            delayed_copy(client_read, server_write, delay, cut.clone()),
                            delayed_copy(server_read, client_write, delay, cut),
                        );
                    });
                }
            });
        }
        Self {
            addr,
            cut,
            runtime: Some(runtime),
        }
    }

    /// Starts a relay on loopback.
    pub fn start(upstream: SocketAddr, delay: Duration) -> Self {
        Self::start_at("127.0.0.1", upstream, delay)
    }

    /// Stops everything both ways until [`TcpDelayRelay::restore`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Carries bytes again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for TcpDelayRelay {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server(runtime: &tokio::runtime::Runtime) -> SocketAddr {
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    #[test]
    fn bytes_cross_after_the_delay_each_way_and_a_cut_holds_them() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let echo = echo_server(&runtime);
        let relay = TcpDelayRelay::start(echo, Duration::from_millis(20));
        runtime.block_on(async {
            let mut socket = TcpStream::connect(relay.addr).await.unwrap();
            let mut buffer = [0u8; 5];
            let started = std::time::Instant::now();
            socket.write_all(b"hello").await.unwrap();
            socket.read_exact(&mut buffer).await.unwrap();
            assert_eq!(&buffer, b"hello");
            let rtt = started.elapsed();
            assert!(rtt >= Duration::from_millis(40), "{rtt:?}");

            relay.cut();
            socket.write_all(b"again").await.unwrap();
            let held =
                tokio::time::timeout(Duration::from_millis(200), socket.read_exact(&mut buffer))
                    .await;
            assert!(held.is_err(), "nothing crosses a cut link");
            relay.restore();
            socket.read_exact(&mut buffer).await.unwrap();
            assert_eq!(&buffer, b"again");
        });
    }
}
