//! Accept-Encoding: choosing among identity and the stored variants (RFC 9110 section 12.5.3).

use httpd_common::webroot::{Encoding, Object, Rep};

use super::request::{Head, ListField, list};

/// q-value in thousandths; None when malformed.
fn qvalue(params: &[u8]) -> Option<u16> {
    let mut q = 1000;
    for p in params.split(|&c| c == b';').map(|p| p.trim_ascii()) {
        let Some(v) = p.strip_prefix(b"q=").or_else(|| p.strip_prefix(b"Q=")) else {
            continue;
        };
        let (int, frac) = match v.iter().position(|&c| c == b'.') {
            Some(d) => (&v[..d], &v[d + 1..]),
            None => (v, &b""[..]),
        };
        if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut f = 0u16;
        for i in 0..3 {
            f = f * 10 + frac.get(i).map_or(0, |c| u16::from(c - b'0'));
        }
        q = match int {
            b"0" => f,
            b"1" if f == 0 => 1000,
            _ => return None,
        };
    }
    Some(q)
}

/// The representation to send for the request's Accept-Encoding (all its lines).
pub fn choose<'o>(h: &Head<'_>, obj: &'o Object) -> Option<&'o Rep> {
    choose_lines(
        h.lines(ListField::AcceptEncoding),
        h.accept_encoding.is_some(),
        obj,
    )
}

/// The representation for these Accept-Encoding lines (`present`: the field was sent).
pub fn choose_lines<'o, 'l>(
    lines: impl Iterator<Item = &'l [u8]>,
    present: bool,
    obj: &'o Object,
) -> Option<&'o Rep> {
    let identity = obj.identity()?;
    if !present || obj.reps.len() == 1 {
        return Some(identity);
    }
    let mut star = None;
    let mut qs = [None::<u16>; 4];
    for el in lines.flat_map(list) {
        let (name, params) = match el.iter().position(|&c| c == b';') {
            Some(s) => (el[..s].trim_ascii(), &el[s + 1..]),
            None => (el, &b""[..]),
        };
        let Some(q) = qvalue(params) else { continue };
        if name == b"*" {
            star = Some(q);
        }
        for e in Encoding::ALL {
            if name.eq_ignore_ascii_case(e.token().as_bytes())
                || (e == Encoding::Gzip && name.eq_ignore_ascii_case(b"x-gzip"))
            {
                qs[e as usize] = Some(q);
            }
        }
    }
    // Best variant: highest q, then smallest body.
    let best = obj.reps[1..]
        .iter()
        .filter_map(|r| {
            qs[r.encoding as usize]
                .or(star)
                .filter(|&q| q > 0)
                .map(|q| (q, r))
        })
        .max_by(|(qa, ra), (qb, rb)| qa.cmp(qb).then(rb.body_len.cmp(&ra.body_len)));
    // Identity is acceptable unless excluded, but preferred only when asked for more strongly
    // (by name, else by `*`, which matches identity too: RFC 9110 section 12.5.3).
    match (best, qs[0].or(star)) {
        (Some((q, r)), Some(qi)) if q >= qi => Some(r),
        (Some((_, r)), None) => Some(r),
        _ => Some(identity),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use httpd_common::webroot::{
        Body, InputObject, InputRep, Webroot, WriteOptions, write_webroot,
    };

    fn obj() -> (tempfile::TempDir, Webroot) {
        let rep = |encoding, body: &[u8]| InputRep {
            encoding,
            body: Body::Bytes(body.to_vec()),
            len: body.len() as u64,
            hash: [encoding as u8; 32],
            sha256: None,
        };
        let o = InputObject::File {
            path: b"/x".to_vec(),
            mime: "text/plain".into(),
            mtime: 0,
            cache_control: None,
            reps: vec![
                rep(Encoding::Identity, b"0123456789"),
                rep(Encoding::Gzip, b"123456"),
                rep(Encoding::Brotli, b"1234"),
            ],
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w");
        let mut f = std::fs::File::create(&p).unwrap();
        write_webroot(&mut f, &p, vec![o], &WriteOptions::default()).unwrap();
        let w = Webroot::open(&p).unwrap();
        (dir, w)
    }

    #[test]
    fn choices() {
        let (_d, w) = obj();
        let o = w.lookup(b"/x").unwrap();
        let c = |a: &str| {
            choose_lines(std::iter::once(a.as_bytes()), true, o)
                .unwrap()
                .encoding
        };
        assert_eq!(
            choose_lines(std::iter::empty(), false, o).unwrap().encoding,
            Encoding::Identity
        );
        // Two lines are one list.
        let two = [&b"gzip;q=0.5"[..], &b"br"[..]];
        assert_eq!(
            choose_lines(two.into_iter(), true, o).unwrap().encoding,
            Encoding::Brotli
        );
        assert_eq!(c("gzip"), Encoding::Gzip);
        assert_eq!(c("gzip, deflate, br"), Encoding::Brotli);
        assert_eq!(c("gzip;q=1.0, br;q=0.5"), Encoding::Gzip);
        assert_eq!(c("br;q=0, gzip"), Encoding::Gzip);
        assert_eq!(c("*"), Encoding::Brotli);
        assert_eq!(c("identity"), Encoding::Identity);
        assert_eq!(c("identity, gzip;q=0.5"), Encoding::Identity);
        assert_eq!(c("gzip;q=0"), Encoding::Identity);
        assert_eq!(c("zstd"), Encoding::Identity);
        assert_eq!(c("gzip;q=2"), Encoding::Identity);
        assert_eq!(c(""), Encoding::Identity);
        // Found by fuzzing: `*;q=1` asks for identity more strongly than `br;q=0.999`, but
        // the variant was chosen.
        assert_eq!(c("x-gzip;q=0, br;q=0.999, *;q=1"), Encoding::Identity);
        assert_eq!(c("br;q=0.5, *;q=0.5"), Encoding::Brotli);
        assert_eq!(c("br;q=0.5, *;q=0"), Encoding::Brotli);
        assert_eq!(c("*"), Encoding::Brotli);
    }
}
