//! httpd: serves static hits from webroot files, forwards the rest to the upstream.
//!
//! The stages of a request, one module each: [`listen`] and [`worker`] (accept, event loop),
//! [`conn`] (read, parse, write), [`http`] (pure protocol logic), [`vhosts`] (route to a host),
//! [`answer`] (the static answer), [`out`] (the I/O models), [`accesslog`] (log).

pub mod accesslog;
pub mod answer;
pub mod cli;
pub mod cold;
pub mod config;
pub mod conn;
pub mod control;
pub mod ctlplane;
pub mod dirwatch;
pub mod ebpf;
#[cfg(feature = "failpoints")]
pub mod failpoints;
pub mod forward;
pub mod http;
pub mod listen;
pub mod metrics;
pub mod out;
pub mod proxyproto;
pub mod server;
pub mod stats;
pub mod sys;
pub mod tls;
pub mod top;
pub mod vhosts;
pub mod worker;
