//! The request target: its form, its host, and the normalised lookup path.

/// Why a target is refused (all 400 Bad Request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("malformed request target")]
    Malformed,
    #[error("bad percent-encoding")]
    BadEscape,
    #[error("forbidden byte in path")]
    ForbiddenByte,
    #[error("path escapes the root")]
    EscapesRoot,
}

/// A parsed request target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target<'a> {
    /// Host from an absolute-form target (`http://host:port/...`), port stripped.
    pub host: Option<&'a [u8]>,
    /// The authority of an absolute-form target as sent (`host:port`).
    pub authority: Option<&'a [u8]>,
    /// The raw path as sent (before decoding), without query.
    pub raw_path: &'a [u8],
    /// The query string without its `?`, if any.
    pub query: Option<&'a [u8]>,
    /// The asterisk-form `*` (OPTIONS only).
    pub asterisk: bool,
}

/// Splits a request target into host (absolute-form), path and query.
pub fn parse_target(t: &[u8]) -> Result<Target<'_>, TargetError> {
    if t == b"*" {
        return Ok(Target {
            host: None,
            authority: None,
            raw_path: b"*",
            query: None,
            asterisk: true,
        });
    }
    let (authority, rest) = if t.first() == Some(&b'/') {
        (None, t)
    } else {
        let scheme_end = t
            .windows(3)
            .position(|w| w == b"://")
            .ok_or(TargetError::Malformed)?;
        let scheme = &t[..scheme_end];
        if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
            return Err(TargetError::Malformed);
        }
        let after = &t[scheme_end + 3..];
        let auth_end = after
            .iter()
            .position(|&c| c == b'/' || c == b'?')
            .unwrap_or(after.len());
        let authority = &after[..auth_end];
        if authority.is_empty() || authority.contains(&b'@') {
            return Err(TargetError::Malformed);
        }
        let rest = &after[auth_end..];
        (Some(authority), rest)
    };
    if rest.contains(&b'#') {
        return Err(TargetError::Malformed);
    }
    let (path, query) = match rest.iter().position(|&c| c == b'?') {
        Some(q) => (&rest[..q], Some(&rest[q + 1..])),
        None => (rest, None),
    };
    let path: &[u8] = if path.is_empty() { b"/" } else { path };
    Ok(Target {
        host: authority.map(strip_port),
        authority,
        raw_path: path,
        query,
        asterisk: false,
    })
}

/// The authority (`host[:port]`) of an absolute-form target, as sent.
pub fn authority(t: &[u8]) -> Option<&[u8]> {
    if t.first() == Some(&b'/') || t == b"*" {
        return None;
    }
    let after = &t[t.windows(3).position(|w| w == b"://")? + 3..];
    let end = after
        .iter()
        .position(|&c| c == b'/' || c == b'?')
        .unwrap_or(after.len());
    Some(&after[..end]).filter(|a| !a.is_empty())
}

/// `host[:port]` or `[v6]:port` without the port.
pub fn strip_port(authority: &[u8]) -> &[u8] {
    if authority.first() == Some(&b'[') {
        return match authority.iter().position(|&c| c == b']') {
            Some(e) => &authority[..=e],
            None => authority,
        };
    }
    match authority.iter().rposition(|&c| c == b':') {
        Some(c) => &authority[..c],
        None => authority,
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes once, resolves `.` and `..`, merges slashes. The result starts with `/`
/// and keeps a trailing slash. Refuses NUL and control bytes and any escape above the root.
pub fn normalize_path(raw: &[u8], out: &mut Vec<u8>) -> Result<(), TargetError> {
    out.clear();
    if raw.first() != Some(&b'/') {
        return Err(TargetError::Malformed);
    }
    // Decoded into `out`, then resolved there in place: no allocation per request.
    out.reserve(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        let b = if c == b'%' {
            let h = raw.get(i + 1).copied().and_then(hex);
            let l = raw.get(i + 2).copied().and_then(hex);
            match (h, l) {
                (Some(h), Some(l)) => {
                    i += 2;
                    h << 4 | l
                }
                _ => return Err(TargetError::BadEscape),
            }
        } else {
            c
        };
        if b < 0x20 || b == 0x7f {
            return Err(TargetError::ForbiddenByte);
        }
        out.push(b);
        i += 1;
    }
    // out[..w] is the result so far: `/` and the kept segments joined by `/` (`depth` of
    // them); out[r..] is what is left to read. The result never outgrows what was read
    // (every kept segment came after a slash of its own), so w < r once a segment is read.
    let len = out.len();
    let (mut w, mut r, mut depth) = (1, 1, 0usize);
    let mut trailing = false;
    while r <= len {
        let end = out[r..]
            .iter()
            .position(|&c| c == b'/')
            .map_or(len, |e| r + e);
        trailing = false;
        match &out[r..end] {
            b"" | b"." => trailing = true,
            b".." => {
                depth = depth.checked_sub(1).ok_or(TargetError::EscapesRoot)?;
                // Back to the slash before the last kept segment (or to the root's).
                w = out[1..w]
                    .iter()
                    .rposition(|&c| c == b'/')
                    .map_or(1, |p| p + 1);
                trailing = true;
            }
            _ => {
                if depth > 0 {
                    out[w] = b'/';
                    w += 1;
                }
                out.copy_within(r..end, w);
                w += end - r;
                depth += 1;
            }
        }
        r = end + 1;
    }
    out.truncate(w);
    if trailing && depth > 0 {
        out.push(b'/');
    }
    Ok(())
}

/// Percent-encodes a path for a Location header (keeps `/` and RFC 3986 pchar bytes).
pub fn encode_path(path: &[u8]) -> String {
    let mut s = String::with_capacity(path.len());
    for &c in path {
        if c.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&c) {
            s.push(c as char);
        } else {
            s.push_str(&format!("%{c:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, TargetError> {
        let mut out = Vec::new();
        normalize_path(p.as_bytes(), &mut out).map(|()| String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn normalization() {
        assert_eq!(norm("/").unwrap(), "/");
        assert_eq!(norm("/a/b.txt").unwrap(), "/a/b.txt");
        assert_eq!(norm("/a/").unwrap(), "/a/");
        assert_eq!(norm("//a///b").unwrap(), "/a/b");
        assert_eq!(norm("/a/./b/../c").unwrap(), "/a/c");
        assert_eq!(norm("/a/..").unwrap(), "/");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
        assert_eq!(norm("/a/.").unwrap(), "/a/");
        assert_eq!(norm("/%61%2fb").unwrap(), "/a/b");
        assert_eq!(norm("/sp%20ace/%C3%BC").unwrap(), "/sp ace/ü");
        assert_eq!(norm("/%2e%2e/x"), Err(TargetError::EscapesRoot));
        assert_eq!(norm("/.."), Err(TargetError::EscapesRoot));
        assert_eq!(norm("/a/../../etc/passwd"), Err(TargetError::EscapesRoot));
        assert_eq!(norm("/a%00b"), Err(TargetError::ForbiddenByte));
        assert_eq!(norm("/a%0d%0a"), Err(TargetError::ForbiddenByte));
        assert_eq!(norm("/a%zz"), Err(TargetError::BadEscape));
        assert_eq!(norm("/a%2"), Err(TargetError::BadEscape));
        // Decoded once: %2525 is "%25", not "%".
        assert_eq!(norm("/%2525").unwrap(), "/%25");
    }

    #[test]
    fn targets() {
        let t = parse_target(b"/a?x=1").unwrap();
        assert_eq!(
            (t.raw_path, t.query, t.host),
            (&b"/a"[..], Some(&b"x=1"[..]), None)
        );
        let t = parse_target(b"http://Example.COM:8080/p?q").unwrap();
        assert_eq!(t.host, Some(&b"Example.COM"[..]));
        assert_eq!(t.raw_path, b"/p");
        let t = parse_target(b"http://h").unwrap();
        assert_eq!(t.raw_path, b"/");
        assert!(parse_target(b"*").unwrap().asterisk);
        assert!(parse_target(b"ftp://h/").is_err());
        assert!(parse_target(b"example.com:443").is_err());
        assert!(parse_target(b"/a#frag").is_err());
        assert!(parse_target(b"http://u@h/").is_err());
        assert_eq!(strip_port(b"[::1]:80"), b"[::1]");
    }

    #[test]
    fn encoding_for_location() {
        assert_eq!(encode_path("/sp ace/ü/".as_bytes()), "/sp%20ace/%C3%BC/");
    }
}
