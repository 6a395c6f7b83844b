//! A TCP proxy the fault harness controls, on loopback (the Toxiproxy approach): a link
//! between two processes (a host and its NATS server, a host and PostgreSQL) goes
//! through one, so a test can **cut** it (every connection closed, new ones refused,
//! as when a process dies), **blackhole** it one way or both (connections stay open and
//! bytes stop, as in a network partition: no FIN, no RST; held rather than thrown away,
//! as TCP holds and resends what a partition swallowed, so a healed link carries on
//! with its stream whole unless an end gave up on it meanwhile), **delay** it, and
//! **heal** it. Nothing leaves the machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Which way bytes go through a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// From the client to the target.
    Up,
    /// From the target back to the client.
    Down,
    /// Both.
    Both,
}

/// What a proxy does with a link now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Bytes pass (after `delay`).
    Pass { delay: Duration },
    /// Bytes going `Way` stop; connections stay open.
    Blackhole(Way),
    /// Every connection is closed; new ones are closed at once.
    Cut,
}

/// A running proxy in front of one target; it stops when dropped.
pub struct Proxy {
    /// Where clients connect: `127.0.0.1:PORT`.
    pub addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy on a free loopback port, forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let mode = Arc::new(watch::Sender::new(Mode::Pass {
            delay: Duration::ZERO,
        }));
        let accept = tokio::spawn(accept_all(listener, target, mode.clone()));
        Self { addr, mode, accept }
    }

    /// Close every connection and refuse new ones (they are closed once accepted).
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Stop bytes going `way` (held until healed), keeping connections open.
    pub fn blackhole(&self, way: Way) {
        self.mode.send_replace(Mode::Blackhole(way));
    }

    /// Let bytes pass, each read held `delay` first.
    pub fn delay(&self, delay: Duration) {
        self.mode.send_replace(Mode::Pass { delay });
    }

    /// Let bytes pass at once again.
    pub fn heal(&self) {
        self.delay(Duration::ZERO);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Cut);
        self.accept.abort();
    }
}

async fn accept_all(listener: TcpListener, target: SocketAddr, mode: Arc<watch::Sender<Mode>>) {
    while let Ok((client, _)) = listener.accept().await {
        if *mode.borrow() == Mode::Cut {
            continue;
        }
        tokio::spawn(link(client, target, mode.subscribe()));
    }
}

/// One client connection and its connection to the target, until either closes or
/// the proxy cuts.
async fn link(client: TcpStream, target: SocketAddr, mode: watch::Receiver<Mode>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pipe(client_read, server_write, Way::Up, mode.clone());
    let down = pipe(server_read, client_write, Way::Down, mode);
    // Either side ending ends both: the halves are dropped, closing the sockets.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// Copy `from` to `to` as `mode` says, until `from` ends, a write fails or a cut.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    way: Way,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Stopped this way: nothing is read, so the sender's own buffers fill as they
        // would behind a partition.
        if !passable(&mut mode, way).await {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() || *mode.borrow() == Mode::Cut {
                    return;
                }
                continue;
            }
        };
        // Read just as the link stopped: held, and sent once it heals.
        if !passable(&mut mode, way).await {
            return;
        }
        let now = *mode.borrow();
        if let Mode::Pass { delay } = now {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Wait until bytes may go `way`: true then, false on a cut (or the proxy gone).
async fn passable(mode: &mut watch::Receiver<Mode>, way: Way) -> bool {
    loop {
        let now = *mode.borrow_and_update();
        match now {
            Mode::Cut => return false,
            Mode::Blackhole(w) if w == way || w == Way::Both => {}
            _ => return true,
        }
        if mode.changed().await.is_err() {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback: what comes in goes back.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let addr = listener.local_addr().expect("echo addr");
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = conn.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// Send `bytes` and read what comes back within `wait`: the bytes, or `None`.
    async fn round_trip(conn: &mut TcpStream, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
        conn.write_all(bytes).await.ok()?;
        let mut got = vec![0u8; bytes.len()];
        match tokio::time::timeout(wait, conn.read_exact(&mut got)).await {
            Ok(Ok(_)) => Some(got),
            _ => None,
        }
    }

    const ARRIVES: Duration = Duration::from_secs(5);
    /// How long a blackholed byte is waited for before it counts as held.
    const GONE: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn a_link_passes_stops_either_way_and_heals() {
        let proxy = Proxy::start(echo().await).await;
        let mut conn = TcpStream::connect(proxy.addr).await.expect("connect");
        assert_eq!(
            round_trip(&mut conn, b"one", ARRIVES).await.as_deref(),
            Some(&b"one"[..])
        );
        for way in [Way::Up, Way::Down, Way::Both] {
            proxy.blackhole(way);
            assert_eq!(round_trip(&mut conn, b"held", GONE).await, None, "{way:?}");
            proxy.heal();
            // What was held arrives once healed, before what follows: the stream is whole.
            let back = round_trip(&mut conn, b"next", ARRIVES).await;
            assert_eq!(back.as_deref(), Some(&b"held"[..]), "{way:?}");
            let mut rest = [0u8; 4];
            let rest = tokio::time::timeout(ARRIVES, conn.read_exact(&mut rest)).await;
            assert!(matches!(rest, Ok(Ok(4))), "{way:?}");
        }
        proxy.delay(Duration::from_millis(20));
        let late = round_trip(&mut conn, b"late", ARRIVES).await;
        assert_eq!(late.as_deref(), Some(&b"late"[..]));
    }

    #[tokio::test]
    async fn a_cut_closes_open_connections_and_refuses_new_ones_until_healed() {
        let proxy = Proxy::start(echo().await).await;
        let mut open = TcpStream::connect(proxy.addr).await.expect("connect");
        assert!(round_trip(&mut open, b"hi", ARRIVES).await.is_some());
        proxy.cut();
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(ARRIVES, open.read(&mut byte)).await;
        assert!(matches!(closed, Ok(Ok(0) | Err(_))), "{closed:?}");
        let mut new = TcpStream::connect(proxy.addr)
            .await
            .expect("accepted, then closed");
        let refused = tokio::time::timeout(ARRIVES, new.read(&mut byte)).await;
        assert!(matches!(refused, Ok(Ok(0) | Err(_))), "{refused:?}");
        proxy.heal();
        let mut again = TcpStream::connect(proxy.addr).await.expect("connect");
        let back = round_trip(&mut again, b"back", ARRIVES).await;
        assert_eq!(back.as_deref(), Some(&b"back"[..]));
    }
}
