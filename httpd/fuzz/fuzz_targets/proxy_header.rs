//! `proxyproto::parse`, the PROXY protocol header (v1 text, v2 binary).
//!
//! Invariants: no panic; a header is never longer than its input nor than `MAX_HEADER`; every
//! proper prefix of a header is incomplete, never an error (a read boundary anywhere in it must
//! not refuse a good client); the header parses the same with any bytes after it; an incomplete
//! input is shorter than `MAX_HEADER`.
#![no_main]

use httpd::proxyproto::{MAX_HEADER, Parsed, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Parsed::Done { len, source }) => {
            assert!(len > 0 && len <= data.len() && len <= MAX_HEADER, "{len}");
            for k in 0..len {
                assert_eq!(parse(&data[..k]), Ok(Parsed::Incomplete), "prefix {k} of {len}");
            }
            let mut more = data[..len].to_vec();
            more.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(parse(&more), Ok(Parsed::Done { len, source }));
        }
        Ok(Parsed::Incomplete) => assert!(data.len() < MAX_HEADER),
        Err(_) => {}
    }
});
