//! The webroot reader on arbitrary bytes: it must refuse or accept, never panic or read out of
//! bounds. Each input is tried as is and resealed (checksums and length fixed up) so the fuzzer
//! also reaches the structural checks behind the checksums.
//! Run: `cd httpd-common/fuzz && cargo +nightly fuzz run webroot_open`.
#![no_main]

use httpd_common::webroot::{Webroot, reseal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let name = std::path::Path::new("fuzz");
    let _ = Webroot::validate_bytes(name, data);
    let mut sealed = data.to_vec();
    reseal(&mut sealed);
    let _ = Webroot::validate_bytes(name, &sealed);
});
