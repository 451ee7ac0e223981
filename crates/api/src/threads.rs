//! Listener threads: several sockets on one address, each served by a
//! single-threaded runtime of its own.
//!
//! Both the base's ingress (`berth base --ingress-threads`) and the gateway
//! (`berth gateway --threads`) serve client connections this way by
//! default, one thread per core: `SO_REUSEPORT` lets the kernel spread new
//! connections over the sockets, and a request never leaves the thread
//! that accepted it. On a work-stealing runtime a request crossed threads
//! several times (connection task, spawned tasks, wake-ups), each time a
//! futex wake and a context switch; see bench/README.md ("Ingress
//! threads") for what that cost on 2 cores.

use std::future::Future;
use std::net::SocketAddr;

/// Where a server accepts client connections.
pub enum Listeners {
    /// One socket, served on the caller's (work-stealing) runtime.
    Shared(tokio::net::TcpListener),
    /// One socket per listener thread, all on the same address
    /// (`SO_REUSEPORT`), not yet registered with any runtime: each thread
    /// serves its own with [`serve_on_own_runtime`].
    PerThread(Vec<std::net::TcpListener>),
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
    if threads == 0 {
        let listener = socket(addr, false)?.listen(backlog)?;
        let addr = listener.local_addr()?;
        return Ok((Listeners::Shared(listener), addr));
    }
    let (listeners, addr) = bind_reuseport(addr, threads, backlog)?;
    Ok((Listeners::PerThread(listeners), addr))
}

/// One listening socket on `addr` (address reuse on, as
/// `TcpListener::bind`) with a listen queue of `backlog`, on the caller's
/// runtime.
pub fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    socket(addr, false)?.listen(backlog)
}

/// A socket bound to `addr`, address reuse on, and port reuse if asked.
fn socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    Ok(socket)
}

/// `count` listening sockets on `addr`, with `SO_REUSEPORT` and a listen
/// queue of `backlog` (port 0: the port the first one got), not yet
/// registered with any runtime; and the address they listen on. Call it
/// from within a tokio runtime.
pub fn bind_reuseport(
    addr: SocketAddr,
    count: usize,
    backlog: u32,
) -> std::io::Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    let mut bound = addr;
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = socket(bound, true)?;
        // Registered with the caller's runtime only for a moment: each
        // listener thread adopts its socket into its own runtime.
        let listener = socket.listen(backlog)?.into_std()?;
        bound = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok((listeners, bound))
}

/// Runs `serve(listener)` on a new single-threaded runtime on the calling
/// thread until it returns (call it from a thread of its own, e.g.
/// `tokio::task::spawn_blocking`). `name` names the thread's role in logs.
pub fn serve_on_own_runtime<F, Fut>(name: &str, listener: std::net::TcpListener, serve: F)
where
    F: FnOnce(tokio::net::TcpListener) -> Fut,
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
        match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => serve(listener).await,
            Err(e) => tracing::error!(error = %e, thread = name, "listener thread cannot listen"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_socket_listens_on_the_port_the_first_got() {
        let (listeners, addr) = bind_reuseport("127.0.0.1:0".parse().unwrap(), 3, 128).unwrap();
        assert_ne!(addr.port(), 0);
        assert_eq!(listeners.len(), 3);
        for listener in &listeners {
            assert_eq!(listener.local_addr().unwrap(), addr);
        }
        // A socket without SO_REUSEPORT cannot take the same port.
        assert!(std::net::TcpListener::bind(addr).is_err());
    }
}
