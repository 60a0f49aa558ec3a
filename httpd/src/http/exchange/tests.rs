//! Every transition of the exchange codec, each fed whole and split at every byte boundary.

use super::*;

const SIDE: HeadSide<'static> = HeadSide {
    extra_headers: b"",
    date: "D",
};

/// A codec maker for `every_split`.
fn codec(r: ClientRequest) -> impl Fn() -> Codec {
    move || Codec::new(r)
}

/// A body-less HTTP/1.0 request.
fn http10() -> ClientRequest {
    ClientRequest {
        minor: 0,
        ..client(Framing::None)
    }
}

fn client(framing: Framing) -> ClientRequest {
    ClientRequest {
        framing,
        minor: 1,
        keep_alive: true,
        head: false,
        upgrade: false,
    }
}

/// What the driver would do: append each piece to a buffer, let the codec take what it can,
/// keep the rest; `eof` after the last piece. Returns the client's bytes, or the error.
fn run(c: &mut Codec, pieces: &[&[u8]], eof: bool) -> Result<Vec<u8>, CodecError> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        buf.extend_from_slice(p);
        let last = i + 1 == pieces.len();
        loop {
            let r = c.response(&buf, eof && last, &SIDE, &mut out)?;
            buf.drain(..r.consumed);
            if r.consumed == 0 || c.is_done() || c.is_tunnel() {
                break;
            }
        }
    }
    Ok(out)
}

/// The same result fed whole and split in two at every byte.
fn every_split(make: impl Fn() -> Codec, input: &[u8], eof: bool) -> (Codec, Vec<u8>) {
    let mut whole = make();
    let want = run(&mut whole, &[input], eof).expect("whole");
    for cut in 0..=input.len() {
        let mut c = make();
        let got = run(&mut c, &[&input[..cut], &input[cut..]], eof).expect("split");
        assert_eq!(got, want, "split at {cut}");
        assert_eq!(
            (
                c.is_done(),
                c.status(),
                c.bytes(),
                c.reusable(),
                c.close_client()
            ),
            (
                whole.is_done(),
                whole.status(),
                whole.bytes(),
                whole.reusable(),
                whole.close_client()
            ),
            "split at {cut}"
        );
    }
    (whole, want)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn length_body_done_and_reusable() {
    let (c, out) = every_split(
        codec(client(Framing::None)),
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        false,
    );
    assert!(c.is_done() && c.reusable() && !c.close_client());
    assert_eq!((c.status(), c.bytes()), (200, 5));
    let s = text(&out);
    assert!(s.starts_with("HTTP/1.1 200 OK\r\n"), "{s}");
    assert!(s.ends_with("Content-Length: 5\r\n\r\nhello"), "{s}");
}

#[test]
fn chunked_body_passed_on_or_dechunked() {
    let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let (c, out) = every_split(codec(client(Framing::None)), resp, false);
    assert!(c.is_done() && c.reusable() && !c.close_client());
    assert!(text(&out).ends_with("chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"));
    // An HTTP/1.0 client gets the data, delimited by the close.
    let (c, out) = every_split(codec(http10()), resp, false);
    assert!(c.is_done() && c.close_client());
    assert_eq!(c.bytes(), 5);
    let s = text(&out);
    assert!(s.ends_with("Connection: close\r\n\r\nhello"), "{s}");
    assert!(!s.contains("chunked"), "{s}");
}

#[test]
fn close_delimited_body_ends_at_eof() {
    let resp = b"HTTP/1.1 200 OK\r\n\r\nuntil the end";
    let (c, out) = every_split(codec(client(Framing::None)), resp, true);
    assert!(c.is_done() && c.close_client() && !c.reusable());
    assert!(text(&out).ends_with("Connection: close\r\n\r\nuntil the end"));
    // Without the close it is still going.
    let mut c = Codec::new(client(Framing::None));
    run(&mut c, &[resp], false).unwrap();
    assert!(!c.is_done() && !c.awaiting_head());
}

#[test]
fn no_body_for_head_204_304() {
    for (req_head, resp) in [
        (true, &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"[..]),
        (false, b"HTTP/1.1 204 No Content\r\n\r\n"),
        (
            false,
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        ),
    ] {
        let (c, _) = every_split(
            codec(ClientRequest {
                head: req_head,
                ..client(Framing::None)
            }),
            resp,
            false,
        );
        assert!(c.is_done() && c.reusable(), "{}", text(resp));
        assert_eq!(c.bytes(), 0);
    }
}

#[test]
fn interim_responses_relayed_to_http11_only() {
    let resp = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let (c, out) = every_split(codec(client(Framing::None)), resp, false);
    assert!(c.is_done() && c.reusable());
    let s = text(&out);
    assert!(
        s.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n"),
        "{s}"
    );
    let (_, out) = every_split(codec(http10()), resp, false);
    assert!(text(&out).starts_with("HTTP/1.1 200 OK\r\n"));
}

#[test]
fn switching_protocols_only_when_asked() {
    let resp = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nfirst tunnel bytes";
    let asked = codec(ClientRequest {
        upgrade: true,
        ..client(Framing::None)
    });
    let mut c = asked();
    let mut out = Vec::new();
    let r = c.response(resp, false, &SIDE, &mut out).unwrap();
    assert!(c.is_tunnel() && !c.request_done());
    assert_eq!(c.status(), 101);
    // The tunnel's bytes are the driver's: the codec stops after the head.
    assert_eq!(&resp[r.consumed..], b"first tunnel bytes");
    let s = text(&out);
    assert!(s.contains("Upgrade: websocket\r\n") && s.ends_with("Connection: upgrade\r\n\r\n"));
    // In a tunnel, what the client sends all goes up.
    assert_eq!(c.request_body(b"abc", 10).unwrap(), 3);
    let mut c = Codec::new(client(Framing::None));
    let mut out = Vec::new();
    assert_eq!(
        c.response(resp, false, &SIDE, &mut out),
        Err(CodecError::UnaskedUpgrade)
    );
    assert!(
        out.is_empty(),
        "a 101 nobody asked for never reaches the client"
    );
}

#[test]
fn upstream_closing_early() {
    let mut c = Codec::new(client(Framing::None));
    assert_eq!(
        run(&mut c, &[b"HTTP/1.1 200 OK\r\nContent-"], true),
        Err(CodecError::ClosedBeforeHead)
    );
    let mut c = Codec::new(client(Framing::None));
    assert_eq!(run(&mut c, &[b""], true), Err(CodecError::ClosedBeforeHead));
    for resp in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    ] {
        let mut c = Codec::new(client(Framing::None));
        assert_eq!(run(&mut c, &[resp], true), Err(CodecError::ClosedInBody));
    }
}

#[test]
fn bad_heads_and_chunks() {
    for resp in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\nContent-Length: 5\n\n",
        b"garbage\r\n\r\n",
    ] {
        let mut c = Codec::new(client(Framing::None));
        assert!(
            matches!(
                run(&mut c, &[resp], false),
                Err(CodecError::ResponseHead(_))
            ),
            "{}",
            text(resp)
        );
    }
    // A bad chunk after a good head: the error comes with the head already produced, for the
    // driver to send before the cut.
    let mut c = Codec::new(client(Framing::None));
    let mut out = Vec::new();
    let r = c.response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        false,
        &SIDE,
        &mut out,
    );
    assert!(matches!(r, Err(CodecError::ResponseChunk(_))));
    assert!(text(&out).starts_with("HTTP/1.1 200 OK\r\n"));
}

#[test]
fn bytes_past_the_response_forbid_reuse() {
    let mut c = Codec::new(client(Framing::None));
    let mut out = Vec::new();
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA";
    let r = c.response(resp, false, &SIDE, &mut out).unwrap();
    assert_eq!(r.consumed, resp.len() - 5);
    assert!(c.is_done() && !c.reusable());
}

#[test]
fn client_asking_to_close() {
    let (c, out) = every_split(
        codec(ClientRequest {
            keep_alive: false,
            ..client(Framing::None)
        }),
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        false,
    );
    assert!(c.close_client() && c.reusable());
    assert!(text(&out).contains("Connection: close\r\n"));
}

#[test]
fn request_bodies_at_every_split() {
    let body = b"5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\nGET /next";
    let framed = body.len() - b"GET /next".len();
    for cut in 0..=body.len() {
        let mut c = Codec::new(client(Framing::Chunked));
        let a = c.request_body(&body[..cut], usize::MAX).unwrap();
        let b = c.request_body(&body[a..], usize::MAX).unwrap();
        assert_eq!(a + b, framed, "cut {cut}");
        assert!(c.request_done());
    }
    for room in 1..20 {
        let mut c = Codec::new(client(Framing::Length(11)));
        let mut taken = 0;
        while !c.request_done() {
            taken += c.request_body(&b"hello worldGET"[taken..], room).unwrap();
        }
        assert_eq!(taken, 11, "room {room}");
    }
    let mut c = Codec::new(client(Framing::Chunked));
    assert!(matches!(
        c.request_body(b"5 \r\nhello\r\n", 100),
        Err(CodecError::RequestChunk(_))
    ));
    let mut c = Codec::new(client(Framing::None));
    assert_eq!(c.request_body(b"GET / HTTP/1.1", 100).unwrap(), 0);
    assert!(c.request_done());
}

#[test]
fn early_response_closes_the_client() {
    // The upstream answered (413, say) before the body was all sent: the rest of the body
    // will not be read, so the client connection closes and the upstream one is not reused.
    let mut c = Codec::new(client(Framing::Length(1000)));
    assert_eq!(c.request_body(b"part", 100).unwrap(), 4);
    run(
        &mut c,
        &[b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n"],
        false,
    )
    .unwrap();
    assert!(c.is_done() && c.close_client() && !c.reusable());
}

#[test]
fn extra_headers_and_date() {
    let side = HeadSide {
        extra_headers: b"X-Host: yes\r\n",
        date: "Sat, 05 Dec 2026 00:00:00 GMT",
    };
    let mut c = Codec::new(client(Framing::None));
    let mut out = Vec::new();
    c.response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        false,
        &side,
        &mut out,
    )
    .unwrap();
    let s = text(&out);
    assert!(s.contains("Date: Sat, 05 Dec 2026 00:00:00 GMT\r\n"), "{s}");
    assert!(s.contains("X-Host: yes\r\n"), "{s}");
}
