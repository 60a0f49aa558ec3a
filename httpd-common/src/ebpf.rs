//! Types shared by the eBPF programs (`httpd-ebpf`) and their user-space loader (`httpd::ebpf`).
//!
//! Everything here is `#[repr(C)]` plain data so both sides read the same bytes. IPv4
//! addresses are kept as the kernel gives them (network byte order in a `u32`); ports are host
//! byte order.

/// Map of ports whose accepted connections are counted (`HashMap<u16, PortSlot>`).
pub const PORTS_MAP: &str = "PORTS";
/// Per-CPU array of accepted-connection counters, one per slot.
pub const CONN_COUNTS_MAP: &str = "CONN_COUNTS";
/// SOCKHASH of the httpd<->upstream sockets, keyed by [`SockKey`].
pub const SOCKS_MAP: &str = "SOCKS";
/// Array of one [`FastpathConfig`], written by httpd before attaching.
pub const FASTPATH_MAP: &str = "FASTPATH";
/// Per-CPU array of fast-path counters, indexed by the `counter` constants.
pub const FASTPATH_COUNTERS_MAP: &str = "FP_COUNTERS";
/// SOCKHASH of tunnel sockets whose received bytes the splice program redirects (it carries
/// the stream verdict), keyed by [`SockKey`].
pub const TUNNELS_MAP: &str = "TUNNELS";
/// SOCKHASH of tunnel sockets as redirect targets only (no program): a socket is a valid target
/// before its own bytes are diverted, so a handover never has a verdict without a target.
pub const TARGETS_MAP: &str = "TARGETS";
/// Hash of tunnel socket -> the other socket of its tunnel (`HashMap<SockKey, SockKey>`).
pub const PEERS_MAP: &str = "PEERS";
/// The stream-verdict program: sends what a tunnel socket receives out of its peer.
pub const SPLICE_PROGRAM: &str = "httpd_splice";
/// The sock_ops program: counts accepted connections, inserts fast-path sockets.
pub const SOCKOPS_PROGRAM: &str = "httpd_sockops";
/// The sk_msg program: redirects each message to the peer socket's ingress queue.
pub const SKMSG_PROGRAM: &str = "httpd_redirect";

/// Number of slots in [`CONN_COUNTS_MAP`] (and so the most ports that can be watched).
pub const MAX_PORTS: u32 = 16;
/// Most sockets in [`SOCKS_MAP`] (two per httpd<->upstream connection).
pub const MAX_SOCKS: u32 = 65_536;
/// Most sockets in [`TUNNELS_MAP`] and [`TARGETS_MAP`] (two per spliced tunnel).
pub const MAX_TUNNEL_SOCKS: u32 = 16_384;

/// Value of [`PORTS_MAP`]: the slot of [`CONN_COUNTS_MAP`] that counts this port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSlot {
    pub slot: u32,
}

/// Key of [`SOCKS_MAP`]: a socket by its own view of the connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockKey {
    pub local_ip: u32,
    pub remote_ip: u32,
    pub local_port: u32,
    pub remote_port: u32,
}

impl SockKey {
    /// The key of the socket at the other end of the same connection.
    pub fn peer(&self) -> SockKey {
        SockKey {
            local_ip: self.remote_ip,
            remote_ip: self.local_ip,
            local_port: self.remote_port,
            remote_port: self.local_port,
        }
    }
}

/// Which connections the fast path takes: those from `source_ip` (the address httpd binds its
/// upstream sockets to) to `upstream_ip:upstream_port`. Nothing else on the machine matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FastpathConfig {
    pub source_ip: u32,
    pub upstream_ip: u32,
    pub upstream_port: u32,
    /// 0: the fast path inserts nothing.
    pub enabled: u32,
}

/// Indices of [`FASTPATH_COUNTERS_MAP`].
pub mod counter {
    /// Sockets inserted into the SOCKHASH.
    pub const INSERTED: u32 = 0;
    /// Insertions that failed (map full, ...).
    pub const INSERT_FAILED: u32 = 1;
    /// Messages redirected to the peer socket.
    pub const REDIRECTED: u32 = 2;
    /// Bytes of those messages.
    pub const REDIRECTED_BYTES: u32 = 3;
    /// Messages of fast-path sockets passed to the normal stack (peer not in the map).
    pub const PASSED: u32 = 4;
    /// Tunnel segments spliced to the peer socket.
    pub const SPLICED: u32 = 5;
    /// Bytes of those segments.
    pub const SPLICED_BYTES: u32 = 6;
    /// Tunnel segments kept by their own socket (no peer target: a handover that stopped
    /// half-way, or a tunnel ending).
    pub const SPLICE_PASSED: u32 = 7;
    /// Number of counters.
    pub const COUNT: u32 = 8;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all three): repr(C) plain data of u32 fields, no padding; any bit pattern is valid.
    unsafe impl aya::Pod for super::PortSlot {}
    unsafe impl aya::Pod for super::SockKey {}
    unsafe impl aya::Pod for super::FastpathConfig {}
}

/// An IPv4 address as the kernel hands it to the programs (stored as in the packet: network
/// order in memory), for keys and the fast-path configuration.
pub fn ip_u32(ip: core::net::Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}
