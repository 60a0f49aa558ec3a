//! Listening sockets: one per worker and address, with SO_REUSEPORT so the kernel spreads
//! connections over the workers without a shared accept queue.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};

fn bind_one(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener: no setsockopt per connection.
    s.set_tcp_nodelay(true)?;
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    // Best effort: without it accept simply happens earlier.
    let _ = crate::sys::set_defer_accept(&s, 5);
    Ok(s.into())
}

/// What a listener is for: its address as configured and as bound, TLS, and the PROXY
/// protocol. Every worker's listeners are in the same order, and a connection remembers the
/// index of the one it came from.
#[derive(Clone)]
pub struct ListenerInfo {
    /// As configured (`0.0.0.0:80`).
    pub addr: SocketAddr,
    /// As bound (the port of a `:0` resolved).
    pub bound: SocketAddr,
    /// HTTPS: the server side of TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The PROXY protocol is expected, from these sources only.
    pub proxy: Option<Arc<[ipnet::IpNet]>>,
}

impl ListenerInfo {
    /// Whether `a` names this listener (as configured or as bound).
    pub fn is(&self, a: SocketAddr) -> bool {
        a == self.addr || a == self.bound
    }
}

/// For each worker, one listener per address. Port 0 is resolved once by the first bind and
/// reused for the others, so all workers share the port.
/// For each worker its listeners, and the addresses they listen on.
pub type Listeners = (Vec<Vec<TcpListener>>, Vec<SocketAddr>);

pub fn bind_all(addrs: &[SocketAddr], workers: usize) -> std::io::Result<Listeners> {
    let mut per_worker: Vec<Vec<TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    for &addr in addrs {
        let first = bind_one(addr)?;
        let actual = first.local_addr()?;
        bound.push(actual);
        per_worker[0].push(first);
        for w in per_worker.iter_mut().skip(1) {
            w.push(bind_one(actual)?);
        }
    }
    Ok((per_worker, bound))
}

/// Listening sockets passed by systemd (socket activation: `LISTEN_PID` is this process,
/// `LISTEN_FDS` sockets from fd 3). Each worker gets its own descriptor of each (dup).
pub fn from_systemd(workers: usize) -> std::io::Result<Option<Listeners>> {
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let n: i32 = match std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        Some(n) if pid_ok && n > 0 => n,
        _ => return Ok(None),
    };
    let mut per_worker: Vec<Vec<TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    for fd in 3..3 + n {
        let l = crate::sys::inherited_listener(fd)?;
        l.set_nonblocking(true)?;
        socket2::SockRef::from(&l).set_tcp_nodelay(true)?;
        bound.push(l.local_addr()?);
        for w in per_worker.iter_mut().skip(1) {
            w.push(l.try_clone()?);
        }
        per_worker[0].push(l);
    }
    Ok(Some((per_worker, bound)))
}
