//! httpd's eBPF programs.
//!
//! * `httpd_sockops` (sock_ops, attached to a cgroup2 directory): counts connections accepted on
//!   the ports in `PORTS`; puts both ends of every httpd<->upstream connection (from the
//!   configured source address to the configured upstream) into the `SOCKS` SOCKHASH at
//!   ESTABLISHED time. Sockets leave the SOCKHASH by themselves when they close.
//! * `httpd_redirect` (sk_msg, attached to `SOCKS`): each message sent on such a socket goes
//!   straight into the peer socket's receive queue, off the TCP/IP stack. When the peer is not
//!   (yet) in the map the message takes the normal path.
//! * `httpd_splice` (sk_skb stream verdict, attached to `TUNNELS`): what a spliced tunnel
//!   socket receives is sent out of its peer (from `PEERS`, looked up in `TARGETS`) with no
//!   copy to user space. Without a target the bytes stay with their own socket (SK_PASS), to
//!   be read by httpd as usual.
//!
//! Rare events (a failed SOCKHASH insert, a message or segment with no peer to go to) are
//! reported with aya-log at debug level, target `httpd_ebpf`; httpd sets `AYA_LOG_LEVEL` at
//! load time so that nothing is written when its log would drop them. The per-message success
//! paths log nothing.
#![no_std]
#![no_main]

use aya_ebpf::bindings::{
    BPF_ANY, BPF_F_INGRESS, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, sk_action,
};
use aya_ebpf::macros::{map, sk_msg, sock_ops, stream_verdict};
use aya_ebpf::maps::{Array, HashMap, PerCpuArray, SockHash};
use aya_ebpf::programs::{SkBuffContext, SkMsgContext, SockOpsContext};
use aya_log_ebpf::debug;
use httpd_common::ebpf::{FastpathConfig, MAX_PORTS, MAX_SOCKS, MAX_TUNNEL_SOCKS, PortSlot, SockKey, counter};

const AF_INET: u32 = 2;

#[map(name = "PORTS")]
static PORTS: HashMap<u16, PortSlot> = HashMap::with_max_entries(MAX_PORTS, 0);

#[map(name = "CONN_COUNTS")]
static CONN_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_PORTS, 0);

#[map(name = "SOCKS")]
static SOCKS: SockHash<SockKey> = SockHash::with_max_entries(MAX_SOCKS, 0);

#[map(name = "FASTPATH")]
static FASTPATH: Array<FastpathConfig> = Array::with_max_entries(1, 0);

#[map(name = "FP_COUNTERS")]
static FP_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[map(name = "TUNNELS")]
static TUNNELS: SockHash<SockKey> = SockHash::with_max_entries(MAX_TUNNEL_SOCKS, 0);

#[map(name = "TARGETS")]
static TARGETS: SockHash<SockKey> = SockHash::with_max_entries(MAX_TUNNEL_SOCKS, 0);

#[map(name = "PEERS")]
static PEERS: HashMap<SockKey, SockKey> = HashMap::with_max_entries(MAX_TUNNEL_SOCKS, 0);

fn bump(index: u32, by: u64) {
    if let Some(c) = FP_COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot: no other CPU writes it, and programs do not nest on one CPU.
        unsafe { *c += by };
    }
}

/// `remote_port` arrives in network order in the upper 16 bits; `local_port` in host order.
fn remote_port(raw: u32) -> u32 {
    u32::from(u16::from_be((raw >> 16) as u16))
}

/// An address as kept in `SockKey` (network order in memory), as aya-log's `{:i}` prints it.
fn ip(raw: u32) -> u32 {
    u32::from_be(raw)
}

#[sock_ops]
pub fn httpd_sockops(ctx: SockOpsContext) -> u32 {
    let op = ctx.op();
    if op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
        return 0;
    }
    if op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
        let port = ctx.local_port() as u16;
        // SAFETY: the map value is plain data and only read here.
        if let Some(slot) = unsafe { PORTS.get(&port) }
            && let Some(c) = CONN_COUNTS.get_ptr_mut(slot.slot)
        {
            // SAFETY: per-CPU slot, as in `bump`.
            unsafe { *c += 1 };
        }
    }
    if ctx.family() != AF_INET {
        return 0;
    }
    let Some(cfg) = FASTPATH.get(0) else { return 0 };
    if cfg.enabled == 0 {
        return 0;
    }
    let mut key = SockKey {
        local_ip: ctx.local_ip4(),
        remote_ip: ctx.remote_ip4(),
        local_port: ctx.local_port(),
        remote_port: remote_port(ctx.remote_port()),
    };
    let ours = if op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        // httpd's end: from the source address to the upstream.
        key.local_ip == cfg.source_ip && key.remote_ip == cfg.upstream_ip && key.remote_port == cfg.upstream_port
    } else {
        // The upstream's end of the same connection.
        key.remote_ip == cfg.source_ip && key.local_ip == cfg.upstream_ip && key.local_port == cfg.upstream_port
    };
    if !ours {
        return 0;
    }
    // SAFETY: `ctx.ops` is the kernel's bpf_sock_ops for this callback, valid for its duration.
    let ops = unsafe { &mut *ctx.ops };
    match SOCKS.update(&mut key, ops, u64::from(BPF_ANY)) {
        Ok(()) => bump(counter::INSERTED, 1),
        Err(err) => {
            bump(counter::INSERT_FAILED, 1);
            debug!(
                &ctx,
                "sock_ops: SOCKS insert failed (error {}) for {:i}:{} -> {:i}:{}: this connection stays off the fast path",
                err,
                ip(key.local_ip),
                key.local_port,
                ip(key.remote_ip),
                key.remote_port
            );
        }
    }
    0
}

#[sk_msg]
pub fn httpd_redirect(ctx: SkMsgContext) -> u32 {
    // SAFETY: `ctx.msg` is the kernel's sk_msg_md for this message, valid for the call.
    let md = unsafe { &*ctx.msg };
    let size = u64::from(md.size);
    let mut peer = SockKey {
        local_ip: md.remote_ip4,
        remote_ip: md.local_ip4,
        local_port: remote_port(md.remote_port),
        remote_port: md.local_port,
    };
    // SK_PASS when the peer is in the map (the message is redirected), SK_DROP otherwise.
    if SOCKS.redirect_msg(&ctx, &mut peer, u64::from(BPF_F_INGRESS)) == i64::from(sk_action::SK_PASS) {
        bump(counter::REDIRECTED, 1);
        bump(counter::REDIRECTED_BYTES, size);
    } else {
        bump(counter::PASSED, 1);
        debug!(
            &ctx,
            "sk_msg: no peer {:i}:{} in SOCKS for {:i}:{}: {} bytes take the normal path (SK_PASS)",
            ip(peer.local_ip),
            peer.local_port,
            ip(peer.remote_ip),
            peer.remote_port,
            size
        );
    }
    sk_action::SK_PASS
}

#[stream_verdict]
pub fn httpd_splice(ctx: SkBuffContext) -> u32 {
    let len = u64::from(ctx.len());
    if len == 0 {
        // A bare FIN: TCP has recorded it already (httpd sees it in the socket state).
        // Redirected, the empty segment would make the peer's send fail with EPIPE.
        return sk_action::SK_DROP;
    }
    let key = SockKey {
        local_ip: ctx.skb.local_ipv4(),
        remote_ip: ctx.skb.remote_ipv4(),
        local_port: ctx.skb.local_port(),
        remote_port: remote_port(ctx.skb.remote_port()),
    };
    // SAFETY: the map value is plain data, copied out at once.
    let Some(peer) = (unsafe { PEERS.get(&key) }) else {
        bump(counter::SPLICE_PASSED, 1);
        debug!(
            &ctx,
            "splice verdict: no peer in PEERS for {:i}:{} -> {:i}:{}: {} bytes stay with the socket (SK_PASS)",
            ip(key.local_ip),
            key.local_port,
            ip(key.remote_ip),
            key.remote_port,
            len
        );
        return sk_action::SK_PASS;
    };
    let mut peer = *peer;
    // Egress of the peer (flags 0): the bytes leave through the other connection.
    if TARGETS.redirect_skb(&ctx, &mut peer, 0) == i64::from(sk_action::SK_PASS) {
        bump(counter::SPLICED, 1);
        bump(counter::SPLICED_BYTES, len);
    } else {
        // No target: SK_PASS keeps the bytes, in order, for this socket's reader.
        bump(counter::SPLICE_PASSED, 1);
        debug!(
            &ctx,
            "splice verdict: target {:i}:{} -> {:i}:{} not in TARGETS for {:i}:{}: {} bytes stay with the socket (SK_PASS)",
            ip(peer.local_ip),
            peer.local_port,
            ip(peer.remote_ip),
            peer.remote_port,
            ip(key.local_ip),
            key.local_port,
            len
        );
    }
    sk_action::SK_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
