//! httpd: serves static hits from webroot files, forwards the rest to the upstream.
pub mod ebpf;
