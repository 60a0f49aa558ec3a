//! Conditional requests, evaluated in the order of RFC 9110 section 13.2.2.

use super::request::{Head, ListField, Method};

/// What the preconditions decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Serve normally (a Range may still apply).
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// One entity-tag from a list: (weak, opaque-tag with quotes).
fn etags(list: &[u8]) -> impl Iterator<Item = Option<(bool, &[u8])>> {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < list.len() && matches!(list[i], b' ' | b'\t' | b',') {
            i += 1;
        }
        if i >= list.len() {
            return None;
        }
        let weak = list[i..].starts_with(b"W/");
        if weak {
            i += 2;
        }
        if list.get(i) != Some(&b'"') {
            i = list.len();
            return Some(None); // malformed: stop
        }
        let start = i;
        match list[i + 1..].iter().position(|&c| c == b'"') {
            Some(e) => {
                i = i + 1 + e + 1;
                Some(Some((weak, &list[start..i])))
            }
            None => {
                i = list.len();
                Some(None)
            }
        }
    })
}

fn is_star(v: &[u8]) -> bool {
    v == b"*"
}

/// Strong comparison of a list against our (strong) ETag.
pub fn strong_match(list: &[u8], etag: &str) -> bool {
    is_star(list) || etags(list).any(|t| matches!(t, Some((false, o)) if o == etag.as_bytes()))
}

/// Weak comparison of a list against our ETag.
pub fn weak_match(list: &[u8], etag: &str) -> bool {
    is_star(list) || etags(list).any(|t| matches!(t, Some((_, o)) if o == etag.as_bytes()))
}

/// An HTTP-date as Unix seconds.
pub fn parse_date(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let t = httpdate::parse_http_date(s).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_secs()).ok()
}

/// Evaluates If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since for the selected
/// representation (`etag`, `mtime`).
pub fn evaluate(h: &Head<'_>, etag: &str, mtime: i64) -> Outcome {
    let get_or_head = matches!(h.method(), Method::Get | Method::Head);
    if h.if_match.is_some() {
        if !h.lines(ListField::IfMatch).any(|im| strong_match(im, etag)) {
            return Outcome::Failed;
        }
    } else if let Some(ius) = h.if_unmodified_since.and_then(parse_date)
        && mtime > ius
    {
        return Outcome::Failed;
    }
    if h.if_none_match.is_some() {
        if h.lines(ListField::IfNoneMatch)
            .any(|inm| weak_match(inm, etag))
        {
            return if get_or_head {
                Outcome::NotModified
            } else {
                Outcome::Failed
            };
        }
    } else if get_or_head
        && let Some(ims) = h.if_modified_since.and_then(parse_date)
        && mtime <= ims
    {
        return Outcome::NotModified;
    }
    Outcome::Proceed
}

/// If-Range: the Range applies only when the validator matches exactly (strong ETag, or the
/// Last-Modified date itself).
pub fn if_range_holds(if_range: &[u8], etag: &str, mtime: i64) -> bool {
    if if_range.starts_with(b"\"") {
        if_range == etag.as_bytes()
    } else if if_range.starts_with(b"W/") {
        false
    } else {
        parse_date(if_range) == Some(mtime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: &str = "\"abc\"";

    fn head<'a>(f: impl FnOnce(&mut Head<'a>)) -> Head<'a> {
        let mut h = Head {
            method_bytes: b"GET",
            ..Head::default()
        };
        f(&mut h);
        h
    }

    #[test]
    fn matching() {
        assert!(strong_match(b"\"x\", \"abc\"", E));
        assert!(!strong_match(b"W/\"abc\"", E));
        assert!(weak_match(b"W/\"abc\"", E));
        assert!(weak_match(b"*", E));
        assert!(!weak_match(b"\"abcd\"", E));
        assert!(!weak_match(b"abc", E));
        assert!(weak_match(b"\"a,b\", \"abc\"", E));
    }

    #[test]
    fn order_of_evaluation() {
        let t = 1_000_000_000;
        let before = "Sat, 08 Sep 2001 01:46:39 GMT"; // t - 1
        let at = "Sun, 09 Sep 2001 01:46:40 GMT"; // t
        assert_eq!(parse_date(at.as_bytes()), Some(t));
        let h = head(|h| h.if_none_match = Some(b"\"abc\""));
        assert_eq!(evaluate(&h, E, t), Outcome::NotModified);
        let h = head(|h| {
            h.if_none_match = Some(b"\"zzz\"");
            h.if_modified_since = Some(at.as_bytes());
        });
        assert_eq!(
            evaluate(&h, E, t),
            Outcome::Proceed,
            "INM present: IMS ignored"
        );
        let h = head(|h| h.if_modified_since = Some(at.as_bytes()));
        assert_eq!(evaluate(&h, E, t), Outcome::NotModified);
        let h = head(|h| h.if_modified_since = Some(before.as_bytes()));
        assert_eq!(evaluate(&h, E, t), Outcome::Proceed);
        let h = head(|h| h.if_match = Some(b"\"nope\""));
        assert_eq!(evaluate(&h, E, t), Outcome::Failed);
        let h = head(|h| {
            h.if_match = Some(b"\"abc\"");
            h.if_unmodified_since = Some(before.as_bytes());
        });
        assert_eq!(
            evaluate(&h, E, t),
            Outcome::Proceed,
            "IM present: IUS ignored"
        );
        let h = head(|h| h.if_unmodified_since = Some(before.as_bytes()));
        assert_eq!(evaluate(&h, E, t), Outcome::Failed);
        let h = head(|h| h.if_modified_since = Some(b"garbage"));
        assert_eq!(evaluate(&h, E, t), Outcome::Proceed);
        assert!(if_range_holds(E.as_bytes(), E, t));
        assert!(!if_range_holds(b"W/\"abc\"", E, t));
        assert!(if_range_holds(at.as_bytes(), E, t));
        assert!(!if_range_holds(before.as_bytes(), E, t));
    }
}
