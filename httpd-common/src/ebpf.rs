//! Types shared by the eBPF programs and their user-space loader.
//!
//! Everything here is `#[repr(C)]` plain data so both sides read the same bytes.

/// Name of the map of ports whose established connections are counted
/// (`HashMap<u16 port (host order), u32 slot>`).
pub const PORTS_MAP: &str = "PORTS";
/// Name of the per-CPU array of established-connection counters, one per slot.
pub const CONN_COUNTS_MAP: &str = "CONN_COUNTS";
/// Name of the sock_ops program that counts established connections.
pub const COUNT_PROGRAM: &str = "count_established";
/// Number of slots in [`CONN_COUNTS_MAP`] (and so the most ports that can be watched).
pub const MAX_PORTS: u32 = 16;

/// Value of [`PORTS_MAP`]: the slot of [`CONN_COUNTS_MAP`] that counts this port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSlot {
    pub slot: u32,
}

#[cfg(feature = "user")]
// SAFETY: PortSlot is repr(C) plain data with no padding; any bit pattern is valid.
unsafe impl aya::Pod for PortSlot {}
