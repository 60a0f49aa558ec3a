//! The floor of what a forwarding proxy can cost: one thread, one epoll loop, each client
//! connection paired with its own persistent upstream connection, bytes copied both ways as
//! they come (a read and a write per direction: 4 syscalls per request and response). No
//! parsing, no framing, no pooling: what is left when a proxy does nothing but move bytes.
//! For the forwarding bench only.
//!
//! Usage: floor_proxy LISTEN_ADDR UPSTREAM_ADDR

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(0);

struct Pair {
    client: TcpStream,
    upstream: TcpStream,
}

/// Copies what `from` has to `to`; a full `to` is waited for by spinning (no buffering, which
/// the bench's small responses never need). False when the pair is over.
fn copy(from: &mut TcpStream, to: &mut TcpStream, buf: &mut [u8]) -> bool {
    loop {
        match from.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                let mut done = 0;
                while done < n {
                    match to.write(&buf[done..n]) {
                        Ok(0) => return false,
                        Ok(k) => done += k,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => return false,
                    }
                }
                if n < buf.len() {
                    return true;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(up)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: floor_proxy LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().map_err(std::io::Error::other)?;
    let up: SocketAddr = up.parse().map_err(std::io::Error::other)?;
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(listen)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut pairs: HashMap<usize, Pair> = HashMap::new();
    let mut next = 1usize;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        poll.poll(&mut events, None)?;
        for ev in events.iter() {
            if ev.token() == LISTENER {
                while let Ok((mut client, _)) = listener.accept() {
                    let std_up = std::net::TcpStream::connect(up)?;
                    std_up.set_nodelay(true)?;
                    std_up.set_nonblocking(true)?;
                    let mut upstream = TcpStream::from_std(std_up);
                    client.set_nodelay(true)?;
                    let id = next;
                    next += 2;
                    poll.registry()
                        .register(&mut client, Token(id), Interest::READABLE)?;
                    poll.registry()
                        .register(&mut upstream, Token(id + 1), Interest::READABLE)?;
                    pairs.insert(id, Pair { client, upstream });
                }
                continue;
            }
            let t = ev.token().0;
            // Client tokens are odd, each upstream's the next even one.
            let id = if t % 2 == 1 { t } else { t - 1 };
            let Some(p) = pairs.get_mut(&id) else {
                continue;
            };
            let alive = if t == id {
                copy(&mut p.client, &mut p.upstream, &mut buf)
            } else {
                copy(&mut p.upstream, &mut p.client, &mut buf)
            };
            if !alive {
                pairs.remove(&id);
            }
        }
    }
}
