//! Embeds the eBPF object when `cargo xtask build-ebpf` has built it; without it httpd builds
//! and runs with eBPF off.
use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(httpd_ebpf)");
    println!("cargo::rerun-if-env-changed=HTTPD_EBPF_OBJ");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let obj = std::env::var_os("HTTPD_EBPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            manifest.join("../httpd-ebpf/target/bpfel-unknown-none/release/httpd-ebpf")
        });
    if obj.is_file() {
        println!("cargo::rerun-if-changed={}", obj.display());
        println!("cargo::rustc-cfg=httpd_ebpf");
        println!("cargo::rustc-env=HTTPD_EBPF_OBJ={}", obj.display());
    } else {
        // Rerun when the eBPF crate gets built.
        println!(
            "cargo::rerun-if-changed={}",
            manifest.join("../httpd-ebpf").display()
        );
    }
}
