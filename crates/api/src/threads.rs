//! Listener threads: one listening socket served by several threads, each
//! with a single-threaded runtime of its own.
//!
//! Both the base's ingress (`berth base --ingress-threads`) and the gateway
//! (`berth gateway --threads`) serve client connections this way by
//! default, one thread per core, and a request never leaves the thread
//! that took its connection. On a work-stealing runtime a request crossed
//! threads several times (connection task, spawned tasks, wake-ups), each
//! time a futex wake and a context switch; see bench/README.md ("Ingress
//! threads") for what that cost on 2 cores.
//!
//! **Why connections are balanced by hand.** The first version gave each
//! thread its own `SO_REUSEPORT` socket. The kernel spreads those by a hash
//! of the client's address and port, so 32 keep-alive connections landed
//! 21/11 or 22/10 as often as 16/16, and the requests on the fuller thread
//! waited longer: a p99 set by the luck of the hash (bench/README.md,
//! "Balanced listener threads"). HAProxy hands each new connection to its
//! least loaded thread; so does this module. Every thread accepts from the
//! same socket (whichever is free first), counts the connections each
//! thread has open, keeps a new connection if its own count is the lowest
//! and otherwise passes it to the thread with the fewest, through that
//! thread's inbox. Only connection set-up crosses threads; requests do not.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

/// Where a server accepts client connections.
pub enum Listeners {
    /// One socket, served on the caller's (work-stealing) runtime.
    Shared(tokio::net::TcpListener),
    /// One socket shared by the listener threads, one [`ThreadSocket`]
    /// each, not yet registered with any runtime: each thread serves its
    /// own with [`serve_on_own_runtime`].
    PerThread(Vec<ThreadSocket>),
}

/// The listening socket(s) for `threads` listener threads on `addr`, with
/// a listen queue of `backlog`, and the address they listen on (port 0:
/// the port the system picked). `threads` 0: one socket on the caller's
/// runtime. Call it from within a tokio runtime.
pub fn bind(
    addr: SocketAddr,
    threads: usize,
    backlog: u32,
) -> std::io::Result<(Listeners, SocketAddr)> {
    let listener = listen(addr, backlog)?;
    let addr = listener.local_addr()?;
    if threads == 0 {
        return Ok((Listeners::Shared(listener), addr));
    }
    Ok((Listeners::PerThread(balanced(listener, threads)?), addr))
}

/// One listening socket on `addr` (address reuse on, as
/// `TcpListener::bind`) with a listen queue of `backlog`, on the caller's
/// runtime.
pub fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    socket(addr)?.listen(backlog)
}

/// A socket bound to `addr`, address reuse on.
fn socket(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// A connection accepted by one thread for another, and its client.
type Handover = (std::net::TcpStream, SocketAddr);

/// What the listener threads of one socket share: each thread's count of
/// open connections and its inbox.
struct Balance {
    threads: Vec<ThreadLoad>,
}

/// One listener thread's load and the way to hand it a connection.
struct ThreadLoad {
    open: AtomicUsize,
    inbox: mpsc::UnboundedSender<Handover>,
}

impl Balance {
    /// The thread a new connection accepted by thread `me` should go to:
    /// the one with the fewest open connections, `me` on a tie. Its count
    /// is raised before this returns.
    fn choose(&self, me: usize) -> usize {
        let mut best = me;
        let mut fewest = self.threads[me].open.load(Ordering::Relaxed);
        for (n, thread) in self.threads.iter().enumerate() {
            let open = thread.open.load(Ordering::Relaxed);
            if open < fewest {
                (best, fewest) = (n, open);
            }
        }
        self.threads[best].open.fetch_add(1, Ordering::Relaxed);
        best
    }
}

/// One listener thread's part of a balanced socket (see the module docs),
/// before the thread registers it with its runtime.
pub struct ThreadSocket {
    listener: std::net::TcpListener,
    seat: Seat,
}

/// A listener thread's place among the threads of one socket.
struct Seat {
    index: usize,
    inbox: mpsc::UnboundedReceiver<Handover>,
    balance: Arc<Balance>,
}

/// `threads` parts of `listener`, one per listener thread.
fn balanced(
    listener: tokio::net::TcpListener,
    threads: usize,
) -> std::io::Result<Vec<ThreadSocket>> {
    // Deregistered from the caller's runtime; every thread registers its
    // own duplicate of the (non-blocking) socket with its own runtime.
    let listener = listener.into_std()?;
    listener.set_nonblocking(true)?;
    let (senders, inboxes): (Vec<_>, Vec<_>) =
        (0..threads).map(|_| mpsc::unbounded_channel()).unzip();
    let balance = Arc::new(Balance {
        threads: senders
            .into_iter()
            .map(|inbox| ThreadLoad {
                open: AtomicUsize::new(0),
                inbox,
            })
            .collect(),
    });
    inboxes
        .into_iter()
        .enumerate()
        .map(|(index, inbox)| {
            Ok(ThreadSocket {
                listener: listener.try_clone()?,
                seat: Seat {
                    index,
                    inbox,
                    balance: balance.clone(),
                },
            })
        })
        .collect()
}

/// Where one accept loop takes its connections from.
pub enum Acceptor {
    /// A socket of its own (the ops API, or all ingress on one runtime).
    Plain(tokio::net::TcpListener),
    /// A listener thread's part of a balanced socket.
    Balanced(BalancedAcceptor),
}

/// A [`ThreadSocket`] registered with its thread's runtime.
pub struct BalancedAcceptor {
    listener: tokio::net::TcpListener,
    seat: Seat,
}

impl From<tokio::net::TcpListener> for Acceptor {
    fn from(listener: tokio::net::TcpListener) -> Self {
        Acceptor::Plain(listener)
    }
}

/// A connection counted against its listener thread's load; dropping it
/// (when the connection ends) takes it off the count.
#[must_use = "the connection counts as open until this is dropped"]
pub struct OpenConnection(Option<(Arc<Balance>, usize)>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some((balance, thread)) = self.0.take() {
            balance.threads[thread].open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Acceptor {
    /// The next connection for this accept loop, its client, and its place
    /// in the thread's count (keep it as long as the connection).
    pub async fn accept(
        &mut self,
    ) -> std::io::Result<(tokio::net::TcpStream, SocketAddr, OpenConnection)> {
        match self {
            Acceptor::Plain(listener) => {
                let (stream, peer) = listener.accept().await?;
                Ok((stream, peer, OpenConnection(None)))
            }
            Acceptor::Balanced(balanced) => balanced.accept().await,
        }
    }
}

impl BalancedAcceptor {
    async fn accept(
        &mut self,
    ) -> std::io::Result<(tokio::net::TcpStream, SocketAddr, OpenConnection)> {
        let seat = &mut self.seat;
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                Some((stream, peer)) = seat.inbox.recv() => {
                    // Counted by the thread that chose this one.
                    return Ok((tokio::net::TcpStream::from_std(stream)?, peer, seat.open()));
                }
                accepted = self.listener.accept() => accepted?,
            };
            let threads = &seat.balance.threads;
            let thread = seat.balance.choose(seat.index);
            if thread == seat.index {
                return Ok((stream, peer, seat.open()));
            }
            // Off this runtime (still non-blocking), onto the other's.
            let handed = (stream.into_std()?, peer);
            if let Err(mpsc::error::SendError((stream, peer))) = threads[thread].inbox.send(handed)
            {
                // That thread has stopped: serve the connection here.
                threads[thread].open.fetch_sub(1, Ordering::Relaxed);
                threads[seat.index].open.fetch_add(1, Ordering::Relaxed);
                return Ok((tokio::net::TcpStream::from_std(stream)?, peer, seat.open()));
            }
        }
    }
}

impl Seat {
    /// A connection's place in this thread's count (already raised).
    fn open(&self) -> OpenConnection {
        OpenConnection(Some((self.balance.clone(), self.index)))
    }
}

/// Runs `serve(acceptor)` on a new single-threaded runtime on the calling
/// thread until it returns (call it from a thread of its own, e.g.
/// `tokio::task::spawn_blocking`). `name` names the thread's role in logs.
pub fn serve_on_own_runtime<F, Fut>(name: &str, socket: ThreadSocket, serve: F)
where
    F: FnOnce(Acceptor) -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, thread = name, "listener thread has no runtime; its connections go to the others");
            return;
        }
    };
    runtime.block_on(async move {
        let ThreadSocket { listener, seat } = socket;
        match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => serve(Acceptor::Balanced(BalancedAcceptor { listener, seat })).await,
            Err(e) => tracing::error!(error = %e, thread = name, "listener thread cannot listen"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Two listener threads that answer each connection with their index
    /// and keep it open until the client closes it.
    fn two_threads() -> (SocketAddr, Arc<Balance>, tokio::sync::watch::Sender<bool>) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let _entered = runtime.enter();
        let (listeners, addr) = bind("127.0.0.1:0".parse().unwrap(), 2, 128).unwrap();
        let Listeners::PerThread(sockets) = listeners else {
            panic!("two threads asked, one shared socket given")
        };
        let balance = sockets[0].seat.balance.clone();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        for socket in sockets {
            let mut stopped = stopped.clone();
            std::thread::spawn(move || {
                serve_on_own_runtime("test", socket, |mut acceptor| async move {
                    loop {
                        let (mut stream, _, open) = tokio::select! {
                            accepted = acceptor.accept() => accepted.unwrap(),
                            _ = stopped.changed() => return,
                        };
                        let Acceptor::Balanced(balanced) = &acceptor else {
                            panic!("a listener thread got a plain socket")
                        };
                        let index = balanced.seat.index as u8;
                        tokio::spawn(async move {
                            stream.write_all(&[index]).await.unwrap();
                            let _ = stream.read(&mut [0u8; 1]).await;
                            drop(open);
                        });
                    }
                });
            });
        }
        (addr, balance, stop)
    }

    /// Opens `count` connections one after another; each with the index
    /// of the thread that serves it.
    fn connect(addr: SocketAddr, count: usize) -> Vec<(std::net::TcpStream, u8)> {
        (0..count)
            .map(|_| {
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut index = [0u8; 1];
                stream.read_exact(&mut index).unwrap();
                (stream, index[0])
            })
            .collect()
    }

    #[test]
    fn connections_go_to_the_thread_with_the_fewest_open() {
        let (addr, balance, _stop) = two_threads();
        // The kernel's hash (SO_REUSEPORT) splits 40 connections 20/20
        // about one time in eight; the count splits them evenly always.
        let first = connect(addr, 40);
        let on_first = first.iter().filter(|(_, index)| *index == 0).count();
        assert_eq!(
            on_first,
            20,
            "40 connections split {on_first}/{}",
            40 - on_first
        );

        // Close thread 0's connections: all new ones go to it until it has
        // as many open as thread 1 again.
        let (closed, kept): (Vec<_>, Vec<_>) = first.into_iter().partition(|(_, i)| *i == 0);
        for (mut stream, _) in closed {
            stream.write_all(b"x").unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while balance.threads[0].open.load(Ordering::Relaxed) > 0 {
            assert!(
                Instant::now() < deadline,
                "closed connections still counted"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let second = connect(addr, 20);
        let indexes: Vec<u8> = second.iter().map(|(_, index)| *index).collect();
        assert_eq!(
            indexes,
            vec![0; 20],
            "with 0 and 20 open, new connections went to {indexes:?}"
        );
        assert_eq!(balance.threads[1].open.load(Ordering::Relaxed), kept.len());
    }

    #[tokio::test]
    async fn one_thread_or_none_serves_the_port_it_reports() {
        for threads in [0, 1, 3] {
            let (listeners, addr) = bind("127.0.0.1:0".parse().unwrap(), threads, 128).unwrap();
            assert_ne!(addr.port(), 0);
            match listeners {
                Listeners::Shared(listener) => {
                    assert_eq!(threads, 0);
                    assert_eq!(listener.local_addr().unwrap(), addr);
                }
                Listeners::PerThread(sockets) => {
                    assert_eq!(sockets.len(), threads);
                    for socket in &sockets {
                        assert_eq!(socket.listener.local_addr().unwrap(), addr);
                    }
                }
            }
        }
    }
}
