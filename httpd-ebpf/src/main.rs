//! httpd's eBPF programs.
//!
//! `count_established` (sock_ops): counts connections accepted on the ports httpd configured in
//! `PORTS`, one per-CPU counter per port slot.
#![no_std]
#![no_main]

use aya_ebpf::bindings::BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB;
use aya_ebpf::macros::{map, sock_ops};
use aya_ebpf::maps::{HashMap, PerCpuArray};
use aya_ebpf::programs::SockOpsContext;
use httpd_common::ebpf::{MAX_PORTS, PortSlot};

#[map(name = "PORTS")]
static PORTS: HashMap<u16, PortSlot> = HashMap::with_max_entries(MAX_PORTS, 0);

#[map(name = "CONN_COUNTS")]
static CONN_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_PORTS, 0);

#[sock_ops]
pub fn count_established(ctx: SockOpsContext) -> u32 {
    if ctx.op() == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
        // local_port is in host byte order in sock_ops.
        let port = ctx.local_port() as u16;
        // SAFETY: the map value is plain data and only read here.
        if let Some(slot) = unsafe { PORTS.get(&port) } {
            if let Some(counter) = CONN_COUNTS.get_ptr_mut(slot.slot) {
                // SAFETY: per-CPU slot: no other CPU writes it, and this program is not reentrant
                // on one CPU.
                unsafe { *counter += 1 };
            }
        }
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
