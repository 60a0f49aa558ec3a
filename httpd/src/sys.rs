//! The few syscalls std and mio do not wrap. Every `unsafe` of the daemon is here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An int-returning syscall's result: Ok, or the errno as an error.
fn check_zero(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// setsockopt(2) of an int option.
fn set_int_option(
    sock: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt with a pointer to a live c_int and its exact size.
    check_zero(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
}

fn check(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// sendfile(2) from `file` at `offset` to the socket; returns bytes sent.
pub fn sendfile(
    sock: &impl AsRawFd,
    file: &impl AsRawFd,
    offset: u64,
    count: usize,
) -> io::Result<usize> {
    let mut off = offset as libc::off_t;
    // SAFETY: both fds are open for the duration of the call (borrowed), `off` is a valid
    // pointer to a local.
    check(unsafe { libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &mut off, count) })
}

/// A second descriptor of the same open socket (close-on-exec), for a cold-send thread to send on
/// while the worker keeps its own.
pub fn dup(fd: &impl AsRawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a borrowed open fd; no memory is passed.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    check_zero(new)?;
    // SAFETY: `new` was just returned by fcntl, is open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Whether the socket would take a write now (poll(2) with no wait).
pub fn writable_now(fd: &impl AsRawFd) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one live pollfd, zero timeout.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && p.revents & libc::POLLOUT != 0
}

/// preadv2(RWF_NOWAIT): reads what the page cache holds of `buf.len()` bytes at `offset` and
/// never waits for the disk: a short count stops at the first page not cached, and EAGAIN
/// means the first one is not. Any user may ask this of a file it can read (unlike mincore and
/// cachestat, which answer "all cached" or EPERM for files the caller cannot write).
pub fn read_nowait(file: &impl AsRawFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let off = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    // SAFETY: one iovec over a live, exclusively borrowed buffer; a borrowed open fd.
    check(unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, off, libc::RWF_NOWAIT) })
}

/// Puts the calling thread in SCHED_BATCH: it keeps its share of the CPU but does not preempt
/// the running thread when it wakes up.
pub fn batch_scheduling() -> io::Result<()> {
    let p = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on the calling thread (0) with a valid sched_param.
    check_zero(unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &p) })
}

/// posix_fadvise(WILLNEED) over `len` bytes: the kernel starts reading them into the page cache
/// (no page of a mapping is touched, so a file truncated meanwhile cannot fault us).
pub fn will_need(file: &impl AsRawFd, len: u64) -> io::Result<()> {
    will_need_range(file, 0, len)
}

/// posix_fadvise(WILLNEED) over `[offset, offset + len)`: the kernel starts reading them.
pub fn will_need_range(file: &impl AsRawFd, offset: u64, len: u64) -> io::Result<()> {
    let off = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    let len = libc::off_t::try_from(len).map_err(io::Error::other)?;
    // SAFETY: plain syscall on a borrowed open fd with integer arguments.
    let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), off, len, libc::POSIX_FADV_WILLNEED) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// sendmsg(2) of the given slices with MSG_NOSIGNAL, and MSG_MORE when a sendfile body
/// follows at once.
pub fn sendv(sock: &impl AsRawFd, bufs: &[std::io::IoSlice<'_>], more: bool) -> io::Result<usize> {
    // SAFETY: a zeroed msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec on Unix (its documented guarantee); sendmsg only
    // reads the array.
    msg.msg_iov = bufs.as_ptr().cast_mut().cast();
    msg.msg_iovlen = bufs.len();
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    // SAFETY: the iovecs point into live slices borrowed for the call.
    check(unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, flags) })
}

/// shutdown(2) of the write side, so the client reads EOF after the last response.
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: shutdown on a socket fd we own; errors (e.g. already reset) do not matter.
    unsafe {
        libc::shutdown(fd, libc::SHUT_WR);
    }
}

/// TCP_DEFER_ACCEPT: the kernel completes accept only once the client sent data (or after
/// `secs`), so a new connection usually has its request ready to read at once.
pub fn set_defer_accept(sock: &impl AsRawFd, secs: i32) -> io::Result<()> {
    set_int_option(sock, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, secs)
}

/// recv(2) of up to `max` bytes appended to `buf`'s spare capacity, without zeroing it first.
pub fn read_spare(sock: &impl AsRawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let n = spare.len().min(max);
    // SAFETY: `spare` is writable memory of at least `n` bytes owned by `buf`; recv writes at
    // most `n` bytes into it.
    let got = check(unsafe { libc::recv(sock.as_raw_fd(), spare.as_mut_ptr().cast(), n, 0) })?;
    // SAFETY: recv initialised the first `got` (<= n) bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + got) };
    Ok(got)
}

/// The uid and gid of `user`.
pub fn lookup_user(user: &str) -> io::Result<(u32, u32)> {
    let name =
        std::ffi::CString::new(user).map_err(|_| io::Error::other("user name contains NUL"))?;
    // SAFETY: getpwnam with a valid C string; the result is read at once, before any other
    // call that could reuse its static buffer.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(io::Error::other(format!("no such user: {user}")));
    }
    // SAFETY: `pw` is non-null and points to the static passwd entry just returned.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// Drops root: supplementary groups cleared, then gid and uid set (for every thread: glibc
/// applies set*id process-wide). With no uid 0 left, no capability remains.
pub fn drop_privileges(uid: u32, gid: u32) -> io::Result<(u32, u32)> {
    // SAFETY: plain syscalls with integer arguments; each result is checked.
    unsafe {
        // This thread keeps its permitted capabilities across setuid, to keep CAP_LEASE below.
        if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setgid(gid) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setuid(uid) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
    }
    keep_only_cap_lease()?;
    Ok((uid, gid))
}

/// Leaves this thread (and the threads it starts from now on) CAP_LEASE and nothing else, so
/// the vhosts thread can take read leases on webroot files owned by another user.
fn keep_only_cap_lease() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_LEASE: u32 = 28;
    let mut hdr = Header {
        version: VERSION_3,
        pid: 0,
    };
    let lease = Data {
        effective: 1 << CAP_LEASE,
        permitted: 1 << CAP_LEASE,
        inheritable: 0,
    };
    let none = Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    };
    let data = [lease, none];
    // SAFETY: capset(2) with a v3 header and the two data words it reads, all locals.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard one; returns the limit now in force.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// sd_notify: sends `state` to the datagram socket in $NOTIFY_SOCKET (systemd Type=notify).
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    let result = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), std::path::Path::new(&path))
    };
    if let Err(e) = result {
        tracing::warn!("sd_notify: {e}");
    }
}

/// A listening socket inherited at `fd` (systemd socket activation).
pub fn inherited_listener(fd: RawFd) -> io::Result<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    // SAFETY: fstat on any fd number is safe; it only checks what the fd is.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid stat buffer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 || (st.st_mode & libc::S_IFMT) != libc::S_IFSOCK {
        return Err(io::Error::other(format!(
            "LISTEN_FDS: fd {fd} is not a socket"
        )));
    }
    // SAFETY: systemd passed this fd to us for this purpose; we take sole ownership of it.
    let l = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    // SAFETY: FD_CLOEXEC on a descriptor we own.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    Ok(l)
}

/// What a spliced tunnel needs from TCP_INFO (plus SIOCOUTQ) of one socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpCounters {
    /// TCP state (`TCP_ESTABLISHED` = 1, ...).
    pub state: u8,
    /// Sequence space the peer acknowledged: data, plus 1 for our SYN on a connecting socket.
    pub bytes_acked: u64,
    /// Sequence space received: data, plus 1 once a FIN arrived.
    pub bytes_received: u64,
    /// Bytes in the send queue not yet acknowledged (SIOCOUTQ).
    pub outq: u64,
}

impl TcpCounters {
    /// Everything ever queued for sending on this socket (acknowledged or not), SYN included.
    pub fn queued(&self) -> u64 {
        self.bytes_acked + self.outq
    }
}

/// TCP_INFO counters and SIOCOUTQ of a TCP socket.
pub fn tcp_counters(sock: &impl AsRawFd) -> io::Result<TcpCounters> {
    // SAFETY: a zeroed tcp_info is valid plain data.
    let mut ti: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `ti` and updates `len`.
    check_zero(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut ti as *mut libc::tcp_info).cast(),
            &mut len,
        )
    })?;
    Ok(TcpCounters {
        state: ti.tcpi_state,
        bytes_acked: ti.tcpi_bytes_acked,
        bytes_received: ti.tcpi_bytes_received,
        outq: unacked(sock)?,
    })
}

/// SO_RCVLOWAT = 1. Setting it makes TCP call the socket's data-ready callback when data is
/// queued, which runs a stream verdict that was attached after that data arrived.
pub fn poke_data_ready(sock: &impl AsRawFd) -> io::Result<()> {
    set_int_option(sock, libc::SOL_SOCKET, libc::SO_RCVLOWAT, 1)
}

/// Changes a registered socket's epoll interest to its peer's close (EPOLLRDHUP, edge
/// triggered; errors and hangups always report), and writability when `writes`, keeping the
/// token mio gave it. A spliced socket so wakes the worker when its peer finishes, not for
/// every segment the kernel moves.
pub fn watch_hangup_only(
    epoll: &impl AsRawFd,
    sock: &impl AsRawFd,
    token: usize,
    writes: bool,
) -> io::Result<()> {
    let out = if writes { libc::EPOLLOUT } else { 0 };
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLRDHUP | libc::EPOLLET | out) as u32,
        u64: token as u64,
    };
    // SAFETY: epoll_ctl on live fds with a pointer to a local event.
    check_zero(unsafe {
        libc::epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_MOD,
            sock.as_raw_fd(),
            &mut ev,
        )
    })
}

/// SO_LINGER {on, 0}: closing the socket then resets the connection and frees its send queue
/// at once, instead of sending what is queued.
pub fn reset_on_close(sock: &impl AsRawFd) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a pointer to a live linger and its exact size.
    check_zero(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    })
}

/// Bytes not yet acknowledged or not yet sent on a socket (SIOCOUTQ).
pub fn unacked(sock: &impl AsRawFd) -> io::Result<u64> {
    let mut outq: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one c_int through the pointer.
    check_zero(unsafe { libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut outq) })?;
    Ok(outq.max(0) as u64)
}

/// `struct inet_diag_sockid` of <linux/inet_diag.h>.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct DiagSockId {
    sport: u16,
    dport: u16,
    src: [u32; 4],
    dst: [u32; 4],
    ifindex: u32,
    cookie: [u32; 2],
}

/// A netlink header and `struct inet_diag_req_v2`.
#[repr(C)]
struct DiagRequest {
    nlh: libc::nlmsghdr,
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: DiagSockId,
}

/// A netlink header and the start of `struct inet_diag_msg`.
#[repr(C)]
struct DiagReply {
    nlh: libc::nlmsghdr,
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: DiagSockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

fn diag_addr(a: std::net::IpAddr) -> [u32; 4] {
    let mut w = [0u32; 4];
    match a {
        std::net::IpAddr::V4(v4) => w[0] = u32::from_ne_bytes(v4.octets()),
        std::net::IpAddr::V6(v6) => {
            for (i, c) in v6.octets().chunks_exact(4).enumerate() {
                w[i] = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
    }
    w
}

/// The receive and send queues (bytes unread; bytes unacknowledged or unsent) of the TCP socket
/// on this host whose local address is `local` and remote address `remote` (sock_diag, one
/// exact lookup). None: no such socket here (the peer is on another machine, or gone).
pub fn socket_queues(
    local: std::net::SocketAddr,
    remote: std::net::SocketAddr,
) -> io::Result<Option<(u32, u32)>> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    if local.is_ipv4() != remote.is_ipv4() {
        return Ok(None);
    }
    // SAFETY: socket(2) with constant arguments; the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let req = DiagRequest {
        nlh: libc::nlmsghdr {
            nlmsg_len: std::mem::size_of::<DiagRequest>() as u32,
            nlmsg_type: SOCK_DIAG_BY_FAMILY,
            nlmsg_flags: libc::NLM_F_REQUEST as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        family: if local.is_ipv4() {
            libc::AF_INET as u8
        } else {
            libc::AF_INET6 as u8
        },
        protocol: libc::IPPROTO_TCP as u8,
        ext: 0,
        pad: 0,
        states: !0,
        id: DiagSockId {
            sport: local.port().to_be(),
            dport: remote.port().to_be(),
            src: diag_addr(local.ip()),
            dst: diag_addr(remote.ip()),
            ifindex: 0,
            cookie: [!0, !0], // INET_DIAG_NOCOOKIE
        },
    };
    // SAFETY: send of a live, fully initialised request of its exact size.
    let sent = unsafe {
        libc::send(
            fd.as_raw_fd(),
            (&req as *const DiagRequest).cast(),
            std::mem::size_of::<DiagRequest>(),
            0,
        )
    };
    check(sent)?;
    let mut buf = [0u8; 1024];
    // The kernel answers a sock_diag request inside send(): the reply is queued by now. Never
    // wait for one (this runs on a worker's loop): a request the kernel dropped (cut short, say)
    // gets no reply, and a blocking recv would freeze the worker for good (the partial-I/O run
    // found it). No reply: an error, so the caller asks again later.
    // SAFETY: recv writes at most buf.len() bytes into the local buffer.
    let n = check(unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    })?;
    let hdr_len = std::mem::size_of::<libc::nlmsghdr>();
    if n < hdr_len {
        return Err(io::Error::other("short sock_diag reply"));
    }
    // SAFETY: n >= size of nlmsghdr; read_unaligned copies it out of the byte buffer.
    let nlh: libc::nlmsghdr = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
    if nlh.nlmsg_type == libc::NLMSG_ERROR as u16 {
        // An error reply: ENOENT when no socket has that address pair.
        return Ok(None);
    }
    if nlh.nlmsg_type != SOCK_DIAG_BY_FAMILY || n < std::mem::size_of::<DiagReply>() {
        return Err(io::Error::other("unexpected sock_diag reply"));
    }
    // SAFETY: n covers a whole DiagReply, plain integers copied out of the byte buffer.
    let reply: DiagReply = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
    // With no connection of that address pair, the kernel's lookup falls back to the socket
    // listening on `local`, whose queues are its backlog (the soak found every closed
    // connection "undelivered" for this): only a connection of exactly this pair counts.
    const TCP_LISTEN: u8 = 10;
    if reply.state == TCP_LISTEN || reply.id.dport != remote.port().to_be() {
        return Ok(None);
    }
    Ok(Some((reply.rqueue, reply.wqueue)))
}

/// Whether every byte written to `sock` is out of the kernel's hands: acknowledged by the peer
/// (nothing in our send queue) and, when the peer is a socket on this host, read by it. Until
/// then, bytes sent with sendfile may still be page-cache pages of the file (TCP and loopback
/// pass them by reference), so a write to the file would change what the peer receives.
pub fn delivered(
    sock: &impl AsRawFd,
    local: std::net::SocketAddr,
    peer: std::net::SocketAddr,
) -> bool {
    unacked(sock).is_ok_and(|q| q == 0) && peer_read_all(local, peer)
}

/// [`delivered`] for a socket already closed: its send queue (it may still be sending after
/// close) and its peer's receive queue, looked up by address.
pub fn delivered_after_close(local: std::net::SocketAddr, peer: std::net::SocketAddr) -> bool {
    matches!(socket_queues(local, peer), Ok(None | Some((_, 0)))) && peer_read_all(local, peer)
}

/// Whether the peer socket on this host (if any) has read everything it received.
fn peer_read_all(local: std::net::SocketAddr, peer: std::net::SocketAddr) -> bool {
    // The peer's socket has the two addresses the other way round.
    matches!(socket_queues(peer, local), Ok(None | Some((0, _))))
}

/// CLOCK_MONOTONIC in microseconds (sd_notify's MONOTONIC_USEC).
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the valid timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that is gone is not found, even though the kernel's lookup falls back to
    /// the listener on the same port (whose queues are its backlog): found by the soak, where
    /// every closed connection looked undelivered and held its webroot's lease.
    #[test]
    fn queues_of_a_closed_connection_are_not_the_listeners() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (s, peer) = l.accept().expect("accept");
        let local = s.local_addr().expect("local");
        assert_eq!(socket_queues(local, peer).expect("diag"), Some((0, 0)));
        // The client closes first: the server's side goes away at once, no TIME_WAIT.
        drop(c);
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(s);
        let t = std::time::Instant::now();
        loop {
            match socket_queues(local, peer).expect("diag") {
                None => break,
                Some(q) => {
                    assert!(q == (0, 0), "queues of a gone connection: {q:?}");
                    assert!(t.elapsed().as_secs() < 5, "connection never went away");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        }
        assert!(delivered_after_close(local, peer));
    }
}
