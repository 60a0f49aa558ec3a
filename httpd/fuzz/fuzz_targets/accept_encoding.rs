//! Accept-Encoding negotiation (`http::negotiate::choose_lines`) over objects with every set of
//! stored variants, against RFC 9110 section 12.5.3.
//!
//! Input: one byte choosing the object (and whether the field was sent), then the field's lines
//! separated by '\n'. Invariants: the choice is one of the object's representations; without
//! the field, or with only identity stored, it is identity; a variant is never one the field
//! refuses (q=0, or not listed and no `*`); on a well-formed field the choice is the acceptable
//! variant with the highest q, the smaller body winning a tie, unless identity is asked for
//! more strongly (its q: `identity`, else `*`; unlisted it is acceptable but not preferred), a
//! variant winning a tie with identity; identity refused is sent only when no variant is
//! acceptable.
#![no_main]

use std::sync::OnceLock;

use httpd::http::negotiate::choose_lines;
use httpd_common::webroot::{
    Body, Encoding, InputObject, InputRep, Object, Webroot, WriteOptions, write_webroot,
};
use libfuzzer_sys::fuzz_target;

/// Body lengths of (identity, gzip, br, zstd) in each profile: distinct, and all variants equal.
const PROFILES: [[u64; 4]; 2] = [[100, 60, 50, 55], [100, 40, 40, 40]];

fn objects() -> &'static Webroot {
    static W: OnceLock<Webroot> = OnceLock::new();
    W.get_or_init(|| {
        let mut objs = Vec::new();
        for (p, lens) in PROFILES.iter().enumerate() {
            for mask in 0..8u8 {
                let mut reps = Vec::new();
                for e in Encoding::ALL {
                    if e != Encoding::Identity && mask & (1 << (e as u8 - 1)) == 0 {
                        continue;
                    }
                    let len = lens[e as usize];
                    reps.push(InputRep {
                        encoding: e,
                        body: Body::Bytes(vec![b'x'; len as usize]),
                        len,
                        hash: [e as u8; 32],
                        sha256: None,
                    });
                }
                objs.push(InputObject::File {
                    path: format!("/p{p}m{mask}").into_bytes(),
                    mime: "text/plain".into(),
                    mtime: 0,
                    cache_control: None,
                    reps,
                });
            }
        }
        let path = std::env::temp_dir().join(format!("httpd-fuzz-ae-{}", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        write_webroot(&mut f, &path, objs, &WriteOptions::default()).unwrap();
        let w = Webroot::open(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        w
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let w = objects();
    let path = format!("/p{}m{}", (sel >> 3) & 1, sel & 7);
    let obj = w.lookup(path.as_bytes()).expect("object");
    let present = sel & 0x80 == 0;
    let lines: Vec<&[u8]> = if present {
        rest.split(|&c| c == b'\n').collect()
    } else {
        Vec::new()
    };
    let r = choose_lines(lines.iter().copied(), present, obj).expect("no representation");
    assert!(
        obj.reps.iter().any(|x| std::ptr::eq(x, r)),
        "not one of the object's representations"
    );
    if !present || obj.reps.len() == 1 {
        assert_eq!(r.encoding, Encoding::Identity);
        return;
    }
    check(&lines, obj, r.encoding, r.body_len);
});

/// The q-values of a well-formed field: per coding (identity, gzip, br, zstd) and `*`. None
/// when an element is malformed or a coding is listed twice (the RFC says nothing then).
fn field(lines: &[&[u8]]) -> Option<([Option<u16>; 4], Option<u16>)> {
    let mut qs = [None; 4];
    let mut star = None;
    for el in lines.iter().flat_map(|l| l.split(|&c| c == b',')) {
        let el = ows(el);
        if el.is_empty() {
            continue;
        }
        let mut parts = el.splitn(2, |&c| c == b';');
        let name = ows(parts.next()?);
        if name.is_empty() || !name.iter().all(|&c| tchar(c)) {
            return None;
        }
        let q = match parts.next() {
            None => 1000,
            Some(w) => qvalue(
                ows(w)
                    .strip_prefix(b"q=")
                    .or_else(|| ows(w).strip_prefix(b"Q="))?,
            )?,
        };
        let slot = if name == b"*" {
            &mut star
        } else if let Some(e) = Encoding::ALL.into_iter().find(|e| {
            name.eq_ignore_ascii_case(e.token().as_bytes())
                || (*e == Encoding::Gzip && name.eq_ignore_ascii_case(b"x-gzip"))
        }) {
            &mut qs[e as usize]
        } else {
            continue; // a coding we do not store
        };
        if slot.replace(q).is_some() {
            return None;
        }
    }
    Some((qs, star))
}

/// qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ), in thousandths.
fn qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v.iter().position(|&c| c == b'.') {
        Some(d) => (&v[..d], &v[d + 1..]),
        None => (v, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let f = frac
        .iter()
        .chain(std::iter::repeat(&b'0'))
        .take(3)
        .fold(0u16, |a, &c| a * 10 + u16::from(c - b'0'));
    match int {
        b"0" => Some(f),
        b"1" if f == 0 => Some(1000),
        _ => None,
    }
}

fn ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn check(lines: &[&[u8]], obj: &Object, chosen: Encoding, chosen_len: u64) {
    let Some((qs, star)) = field(lines) else {
        return;
    };
    let q_of = |e: Encoding| qs[e as usize].or(star).unwrap_or(0);
    // Identity's own q when the field gives one (`identity`, else `*`): unlisted, it is
    // acceptable but not preferred over a listed variant.
    let q_identity = qs[0].or(star);
    let best = obj.reps[1..]
        .iter()
        .map(|r| q_of(r.encoding))
        .max()
        .unwrap_or(0);
    let show = || {
        format!(
            "{:?} over {:?}",
            lines
                .iter()
                .map(|l| String::from_utf8_lossy(l))
                .collect::<Vec<_>>(),
            obj.reps.iter().map(|r| r.encoding).collect::<Vec<_>>()
        )
    };
    if chosen == Encoding::Identity {
        // Identity only when no variant is acceptable or identity is asked for more strongly.
        assert!(
            best == 0 || q_identity.is_some_and(|qi| qi > best),
            "identity chosen: {}",
            show()
        );
    } else {
        let q = q_of(chosen);
        assert!(q > 0, "refused coding {chosen:?} chosen: {}", show());
        assert_eq!(q, best, "{chosen:?} is not the best: {}", show());
        assert!(
            q >= q_identity.unwrap_or(0),
            "{chosen:?} chosen over identity: {}",
            show()
        );
        let smallest = obj.reps[1..]
            .iter()
            .filter(|r| q_of(r.encoding) == best)
            .map(|r| r.body_len)
            .min()
            .unwrap();
        assert_eq!(
            chosen_len,
            smallest,
            "not the smallest best variant: {}",
            show()
        );
    }
}
