//! The webroot reader on arbitrary bytes (was httpd-common's `webroot_open`): it must refuse or
//! accept, never panic or read out of bounds. Each input is tried as is and resealed (checksums
//! and length fixed up) so the fuzzer also reaches the structural checks behind the checksums.
//!
//! A file that validates is opened for real (`Webroot::open`), and then: open agrees with
//! `validate_bytes`; every object is found by `lookup` under its own path; every representation
//! lies inside the data section and the file (header block then body, the mapping and pread
//! agree on its bounds); identity comes first; texts have no control bytes; `verify` and a
//! lookup of arbitrary bytes do not panic.
#![no_main]

use std::path::{Path, PathBuf};

use httpd_common::webroot::{ALIGN, Encoding, Kind, MAX_REPS, Webroot, reseal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut sealed = data.to_vec();
    reseal(&mut sealed);
    check(&sealed);
});

/// Where a validated input is written to be opened: one file per process.
fn scratch() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("httpd-fuzz-webroot-{}", std::process::id()))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn check(bytes: &[u8]) {
    let Ok(n) = Webroot::validate_bytes(Path::new("fuzz"), bytes) else {
        return;
    };
    let path = scratch();
    std::fs::write(&path, bytes).unwrap();
    let opened = Webroot::open(&path);
    let _ = std::fs::remove_file(&path);
    let w = opened.expect("validate_bytes accepted what open refuses");
    assert_eq!(w.objects().len(), n);

    // Header fields (docs/webroot-format.md): data section offset at 56, length at 64.
    let file_len = bytes.len() as u64;
    let (data_off, data_len) = (u64_at(bytes, 56), u64_at(bytes, 64));
    let data_end = data_off + data_len;
    assert!(data_off >= ALIGN && data_end <= file_len);
    assert_eq!(w.data_len(), data_len);
    assert!(w.page_stamps().len() as u64 * 4096 >= file_len);

    for o in w.objects() {
        assert_eq!(o.path.first(), Some(&b'/'));
        let found = w
            .lookup(&o.path)
            .expect("object not found under its own path");
        assert_eq!(found.path, o.path);
        assert!(!o.mime.bytes().any(|c| c < 0x20 || c == 0x7f));
        if let Some(cc) = &o.cache_control {
            assert!(!cc.bytes().any(|c| c < 0x20 || c == 0x7f));
        }
        match o.kind {
            Kind::Redirect => assert!(o.reps.is_empty()),
            Kind::File => {
                assert!(!o.reps.is_empty() && o.reps.len() <= MAX_REPS);
                assert_eq!(o.identity().unwrap().encoding, Encoding::Identity);
            }
        }
        for (k, r) in o.reps.iter().enumerate() {
            assert_eq!(k == 0, r.encoding == Encoding::Identity);
            let total = u64::from(r.hdr_len) + r.body_len;
            assert!(r.hdr_off >= data_off, "region before the data section");
            assert!(
                r.hdr_off + total <= data_end,
                "region past the data section"
            );
            assert_eq!(r.body_off(), r.hdr_off + u64::from(r.hdr_len));
            let mapped = w
                .kernel_bytes(r.hdr_off, total)
                .expect("region outside the mapping");
            assert_eq!(mapped.len() as u64, total);
            assert_eq!(w.header_block(r).unwrap().len(), r.hdr_len as usize);
            assert_eq!(w.body(r).unwrap().len() as u64, r.body_len);
            assert!(r.etag.starts_with('"') && r.etag.ends_with('"') && r.etag.len() >= 2);
        }
    }
    let _ = w.verify();
    let probe = &bytes[bytes.len().min(HEADER_PROBE)..bytes.len().min(HEADER_PROBE + 32)];
    if let Some(o) = w.lookup(probe) {
        assert_eq!(&*o.path, probe);
    }
}

/// Some input bytes past the header, looked up as a path.
const HEADER_PROBE: usize = 128;
