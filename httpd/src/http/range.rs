//! Range requests (RFC 9110 section 14). One range gives 206; several ranges are answered with
//! the full representation (200), which the RFC allows and which avoids multipart bodies.

/// The decision for a Range header over a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Ignore the Range: 200 with everything.
    Full,
    /// 206 with bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

fn num(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Saturate: a position beyond any length is still a valid (unsatisfiable) position.
    Some(s.iter().fold(0u64, |a, &c| {
        a.saturating_mul(10).saturating_add(u64::from(c - b'0'))
    }))
}

pub fn decide(range: &[u8], len: u64) -> Decision {
    let Some(eq) = range.iter().position(|&c| c == b'=') else {
        return Decision::Full;
    };
    if !range[..eq].eq_ignore_ascii_case(b"bytes") {
        return Decision::Full;
    }
    let mut count = 0;
    let mut satisfiable = None;
    for spec in super::request::list(&range[eq + 1..]) {
        count += 1;
        let Some(dash) = spec.iter().position(|&c| c == b'-') else {
            return Decision::Full;
        };
        let (a, b) = (&spec[..dash], &spec[dash + 1..]);
        let r = if a.is_empty() {
            let Some(suffix) = num(b) else {
                return Decision::Full;
            };
            if suffix > 0 && len == 0 {
                // A suffix of an empty representation is satisfiable: it is all of it (200).
                return Decision::Full;
            }
            (suffix > 0).then(|| (len - suffix.min(len), len - 1))
        } else {
            let Some(first) = num(a) else {
                return Decision::Full;
            };
            let last = if b.is_empty() {
                u64::MAX
            } else {
                match num(b) {
                    Some(l) if l >= first => l,
                    _ => return Decision::Full,
                }
            };
            (first < len).then(|| (first, last.min(len - 1)))
        };
        if r.is_some() && satisfiable.is_none() {
            satisfiable = r;
        }
    }
    match (count, satisfiable) {
        (0, _) => Decision::Full,
        (_, None) => Decision::Unsatisfiable,
        (1, Some((start, end))) => Decision::Partial { start, end },
        _ => Decision::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::Decision::*;
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(decide(b"bytes=0-9", 100), Partial { start: 0, end: 9 });
        assert_eq!(decide(b"bytes=90-", 100), Partial { start: 90, end: 99 });
        assert_eq!(
            decide(b"bytes=90-1000", 100),
            Partial { start: 90, end: 99 }
        );
        assert_eq!(decide(b"bytes=-10", 100), Partial { start: 90, end: 99 });
        assert_eq!(decide(b"bytes=-1000", 100), Partial { start: 0, end: 99 });
        assert_eq!(decide(b"Bytes=5-5", 100), Partial { start: 5, end: 5 });
        assert_eq!(decide(b"bytes=100-", 100), Unsatisfiable);
        assert_eq!(decide(b"bytes=-0", 100), Unsatisfiable);
        assert_eq!(decide(b"bytes=0-", 0), Unsatisfiable);
        assert_eq!(decide(b"bytes=-5", 0), Full);
        assert_eq!(
            decide(b"bytes=99999999999999999999999-", 100),
            Unsatisfiable
        );
        assert_eq!(decide(b"bytes=5-1", 100), Full);
        assert_eq!(decide(b"bytes=a-b", 100), Full);
        assert_eq!(decide(b"items=0-1", 100), Full);
        assert_eq!(decide(b"bytes=0-1,5-6", 100), Full);
        assert_eq!(decide(b"bytes=200-300,400-", 100), Unsatisfiable);
        assert_eq!(decide(b"bytes=", 100), Full);
    }
}
