//! The PROXY protocol (HAProxy's; v1 text and v2 binary), parsed with the `ppp` crate: a TLS
//! terminator or load balancer in front says who the client is before the first byte of the
//! connection's own traffic. Accepted only on listeners configured for it, only from trusted
//! source addresses; the address it carries is the client's everywhere (logs,
//! X-Forwarded-For).

use std::net::{IpAddr, SocketAddr};

use ppp::{HeaderResult, PartialResult};

/// The longest header accepted: a v1 line is at most 107 bytes; a v2 header is 16 bytes and
/// its addresses and TLVs (load balancers send a few short ones).
pub const MAX_HEADER: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// A header of `len` bytes; `source` is the client it names (None: `LOCAL` or `UNKNOWN`,
    /// the proxy speaking for itself: the connection's own peer stands).
    Done {
        len: usize,
        source: Option<SocketAddr>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("not a PROXY protocol header: {0}")]
    Invalid(String),
    #[error("PROXY protocol header longer than {MAX_HEADER} bytes")]
    TooLong,
}

/// The longest v1 line, CRLF included.
const MAX_V1: usize = 107;

/// Parses the header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, HeaderError> {
    // v1 is parsed only once its line is complete: `ppp` calls a port cut short by the read
    // boundary invalid, and a line cut short after its CRLF incomplete.
    let head = &buf[..buf.len().min(5)];
    if head == &b"PROXY"[..head.len()] {
        let Some(i) = buf[..buf.len().min(MAX_V1)]
            .windows(2)
            .position(|w| w == b"\r\n")
        else {
            if buf.len() >= MAX_V1 {
                return Err(HeaderError::Invalid("v1 line longer than 107 bytes".into()));
            }
            return Ok(Parsed::Incomplete);
        };
        let line = &buf[..i + 2];
        let r = HeaderResult::parse(line);
        if r.is_incomplete() {
            return Err(HeaderError::Invalid("v1 line without its addresses".into()));
        }
        return done(r);
    }
    let r = HeaderResult::parse(buf);
    if r.is_incomplete() {
        if buf.len() >= MAX_HEADER {
            return Err(HeaderError::TooLong);
        }
        return Ok(Parsed::Incomplete);
    }
    done(r)
}

fn done(r: HeaderResult<'_>) -> Result<Parsed, HeaderError> {
    match r {
        HeaderResult::V1(Ok(h)) => {
            let source = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                }
                ppp::v1::Addresses::Unknown => None,
            };
            Ok(Parsed::Done {
                len: h.header.len(),
                source,
            })
        }
        HeaderResult::V2(Ok(h)) => {
            let len = h.header.len();
            if len > MAX_HEADER {
                return Err(HeaderError::TooLong);
            }
            let source = match (h.command, h.addresses) {
                (ppp::v2::Command::Local, _) => None,
                (_, ppp::v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                }
                (_, ppp::v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                }
                _ => None,
            };
            Ok(Parsed::Done { len, source })
        }
        HeaderResult::V1(Err(e)) => Err(HeaderError::Invalid(e.to_string())),
        HeaderResult::V2(Err(e)) => Err(HeaderError::Invalid(e.to_string())),
    }
}

/// A trusted source: a network (`10.0.0.0/8`) or one address (`127.0.0.1`).
pub fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?}: not an address or network (10.0.0.0/8)"))
}

/// Whether `ip` may send a header (one of the listener's trusted networks).
pub fn trusted(nets: &[ipnet::IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    nets.iter().any(|n| n.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_headers() {
        let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
        let Ok(Parsed::Done { len, source }) = parse(h) else {
            panic!("{:?}", parse(h));
        };
        assert_eq!(&h[len..len + 3], b"GET");
        assert_eq!(source, Some("192.0.2.7:56324".parse().unwrap()));
        let h6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1000 443\r\n";
        assert!(matches!(
            parse(h6),
            Ok(Parsed::Done {
                len: 45,
                source: Some(SocketAddr::V6(_))
            })
        ));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Parsed::Done {
                len: 15,
                source: None
            })
        );
        // Every prefix of a header is incomplete, not an error.
        for i in 0..h.len().min(45) {
            assert_eq!(parse(&h[..i]), Ok(Parsed::Incomplete), "{i}");
        }
    }

    #[test]
    fn forged_and_broken_headers_are_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"PROXY TCP4 999.0.2.7 198.51.100.1 56324 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 99999 443\r\n",
            b"PROXY TCP9 192.0.2.7 198.51.100.1 1 443\r\n",
            b"PROXY TCP4 192.0.2.7\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(HeaderError::Invalid(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(bad),
                parse(bad)
            );
        }
        let long = [b'P'; 200];
        assert!(parse(&long).is_err());
    }

    fn v2(cmd: u8, fam: u8, addrs: &[u8]) -> Vec<u8> {
        let mut v = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        v.push(0x20 | cmd);
        v.push(fam);
        v.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
        v.extend_from_slice(addrs);
        v
    }

    #[test]
    fn v2_headers() {
        let mut a = vec![192, 0, 2, 7, 198, 51, 100, 1];
        a.extend_from_slice(&56324u16.to_be_bytes());
        a.extend_from_slice(&443u16.to_be_bytes());
        let mut h = v2(1, 0x11, &a);
        let n = h.len();
        h.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(
            parse(&h),
            Ok(Parsed::Done {
                len: n,
                source: Some("192.0.2.7:56324".parse().unwrap())
            })
        );
        for i in 0..n {
            assert_eq!(parse(&h[..i]), Ok(Parsed::Incomplete), "{i}");
        }
        // LOCAL: the proxy's own connection (a health check).
        let local = v2(0, 0x00, &[]);
        assert_eq!(
            parse(&local),
            Ok(Parsed::Done {
                len: 16,
                source: None
            })
        );
        // Version 3, a length beyond the addresses it claims.
        let mut bad = v2(1, 0x11, &a);
        bad[12] = 0x31;
        assert!(parse(&bad).is_err());
        let huge = v2(1, 0x11, &vec![0; 5000]);
        assert!(parse(&huge).is_err());
    }

    #[test]
    fn trusted_sources() {
        let nets: Vec<ipnet::IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        assert!(trusted(&nets, "127.0.0.1".parse().unwrap()));
        assert!(trusted(&nets, "10.2.3.4".parse().unwrap()));
        assert!(trusted(&nets, "::ffff:10.2.3.4".parse().unwrap()));
        assert!(!trusted(&nets, "127.0.0.2".parse().unwrap()));
    }
}
