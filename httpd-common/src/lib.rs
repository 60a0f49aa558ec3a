//! Shared definitions of the httpd workspace.
//!
//! * [`ebpf`]: map keys, values and counter indices shared by the eBPF programs (`httpd-ebpf`,
//!   `no_std`) and the user-space loader in `httpd`.
//! * [`webroot`] (feature `std`): the on-disk webroot format, its reader and its writer.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod ebpf;

#[cfg(feature = "std")]
pub mod webroot;
