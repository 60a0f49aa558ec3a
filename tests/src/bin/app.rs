//! A small app server for the end-to-end tests (the upstream behind httpd). Thread per
//! connection, keep-alive, strict enough to notice smuggled requests. Every request head it
//! receives is appended to the file named by `--log` (one line: method and target), so tests
//! can check what reached the upstream.
//!
//! Paths: /echo (method, target, headers, body back), /big?bytes=N, /chunked?n=K,
//! /slow?ms=N, /close (close-delimited body), /fail (close without answer),
//! /die-mid?bytes=N (announces N, sends half, closes), /status?code=N, /upload (counts body),
//! /ws (Upgrade: answers 101 and echoes bytes until EOF), /interim (103 before 200).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn query(target: &str, key: &str) -> Option<u64> {
    let q = target.split_once('?')?.1;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

struct Req {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    raw_head: String,
}

impl Req {
    fn header(&self, n: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    }
}

fn read_line(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    if !line.ends_with(b"\r\n") {
        return Err(std::io::Error::other("line without CRLF"));
    }
    line.truncate(line.len() - 2);
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

/// Reads one request; body read fully unless `/upload` (streamed and counted) or `/ws`.
fn read_request(r: &mut BufReader<TcpStream>, w: &mut TcpStream) -> std::io::Result<Option<Req>> {
    let Some(line) = read_line(r)? else {
        return Ok(None);
    };
    let mut parts = line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = Vec::new();
    let mut raw_head = line.clone() + "\r\n";
    loop {
        let Some(h) = read_line(r)? else {
            return Ok(None);
        };
        if h.is_empty() {
            break;
        }
        raw_head.push_str(&h);
        raw_head.push_str("\r\n");
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| std::io::Error::other("bad header"))?;
        headers.push((k.to_string(), v.trim().to_string()));
    }
    let mut req = Req {
        method,
        target,
        headers,
        body: Vec::new(),
        raw_head,
    };
    if req
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let counting = req.target.starts_with("/upload");
    let sink = |chunk: &[u8], body: &mut Vec<u8>| {
        if counting {
            // Keep only a count (8 bytes) so a 1 GiB upload does not grow this process.
            let n = u64::from_le_bytes(
                body.get(..8)
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or([0; 8]),
            );
            *body = (n + chunk.len() as u64).to_le_bytes().to_vec();
        } else {
            body.extend_from_slice(chunk);
        }
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size_line = read_line(r)?.ok_or_else(|| std::io::Error::other("eof in chunk"))?;
            let size = u64::from_str_radix(size_line.split(';').next().unwrap_or(""), 16)
                .map_err(std::io::Error::other)?;
            if size == 0 {
                while let Some(t) = read_line(r)? {
                    if t.is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut left = size;
            let mut buf = vec![0u8; 64 * 1024];
            while left > 0 {
                let n = r.read(&mut buf[..left.min(65536) as usize])?;
                if n == 0 {
                    return Err(std::io::Error::other("eof in chunk data"));
                }
                sink(&buf[..n], &mut req.body);
                left -= n as u64;
            }
            read_line(r)?;
        }
    } else if let Some(cl) = req.header("content-length") {
        let mut left: u64 = cl.parse().map_err(std::io::Error::other)?;
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let n = r.read(&mut buf[..left.min(65536) as usize])?;
            if n == 0 {
                return Err(std::io::Error::other("eof in body"));
            }
            sink(&buf[..n], &mut req.body);
            left -= n as u64;
        }
    }
    Ok(Some(req))
}

fn respond(w: &mut TcpStream, status: &str, headers: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    );
    w.write_all(head.as_bytes())?;
    w.write_all(body)
}

fn serve(s: TcpStream, log: Arc<Mutex<std::fs::File>>) -> std::io::Result<()> {
    // Heads and bodies go in separate writes: without this, Nagle holds each body until httpd
    // acknowledges the head (a 40 ms delayed ACK), as in any app server that forgets it.
    s.set_nodelay(true)?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    while let Some(req) = read_request(&mut r, &mut w)? {
        {
            let mut f = log.lock().map_err(|_| std::io::Error::other("lock"))?;
            writeln!(f, "{} {}", req.method, req.target)?;
        }
        let path = req.target.split('?').next().unwrap_or("").to_string();
        let head_req = req.method == "HEAD";
        match path.as_str() {
            "/big" => {
                let n = query(&req.target, "bytes").unwrap_or(1 << 20);
                w.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes())?;
                if !head_req {
                    let block: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
                    let mut left = n;
                    while left > 0 {
                        let k = left.min(block.len() as u64) as usize;
                        w.write_all(&block[..k])?;
                        left -= k as u64;
                    }
                }
            }
            "/chunked" => {
                let n = query(&req.target, "n").unwrap_or(3);
                w.write_all(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n",
                )?;
                for i in 0..n {
                    let data = format!("chunk-{i};");
                    w.write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())?;
                    w.flush()?;
                }
                w.write_all(b"0\r\nX-Checksum: 42\r\n\r\n")?;
            }
            "/slow" => {
                std::thread::sleep(Duration::from_millis(
                    query(&req.target, "ms").unwrap_or(1000),
                ));
                respond(&mut w, "200 OK", "", b"slow")?;
            }
            "/close" => {
                w.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")?;
                return Ok(());
            }
            "/fail" => return Ok(()),
            "/die-mid" => {
                let n = query(&req.target, "bytes").unwrap_or(100_000);
                w.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n").as_bytes())?;
                w.write_all(&vec![b'x'; (n / 2) as usize])?;
                return Ok(());
            }
            "/status" => {
                let code = query(&req.target, "code").unwrap_or(200);
                if code == 204 || code == 304 {
                    w.write_all(format!("HTTP/1.1 {code} X\r\nETag: \"e\"\r\n\r\n").as_bytes())?;
                } else {
                    respond(&mut w, &format!("{code} X"), "", b"status")?;
                }
            }
            "/upload" => {
                let n = u64::from_le_bytes(
                    req.body
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .unwrap_or([0; 8]),
                );
                respond(&mut w, "200 OK", "", n.to_string().as_bytes())?;
            }
            "/hopcl" => {
                // Tries to hide its own framing by listing it as hop-by-hop.
                w.write_all(b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello")?;
            }
            "/interim" => {
                w.write_all(
                    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
                )?;
                respond(&mut w, "200 OK", "", b"after hints")?;
            }
            "/ws" if req.header("upgrade").is_some() && query(&req.target, "send").is_some() => {
                // The upstream talks first and closes first: N bytes, then EOF.
                w.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")?;
                let n = query(&req.target, "send").unwrap_or(0);
                let block: Vec<u8> = (0..65536u32).map(|i| (i % 253) as u8).collect();
                let mut left = n;
                while left > 0 {
                    let k = left.min(block.len() as u64) as usize;
                    w.write_all(&block[..k])?;
                    left -= k as u64;
                }
                w.shutdown(std::net::Shutdown::Write)?;
                let mut sink = Vec::new();
                let _ = r.read_to_end(&mut sink);
                return Ok(());
            }
            "/badresp" => {
                let bad: &[u8] = match query(&req.target, "k").unwrap_or(0) {
                    0 => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                    1 => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                    2 => b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello",
                    3 => b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 5\r\n\r\nhello",
                    4 => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
                    // A 101 the request did not ask for.
                    6 => b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                    // An interim response, then the close: a final response is still owed.
                    7 => b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                    _ => b"NOT HTTP AT ALL\r\n\r\n",
                };
                w.write_all(bad)?;
                return Ok(());
            }
            "/ws" if req.header("upgrade").is_some() => {
                w.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")?;
                // Echo until EOF, then close our side too (after everything was echoed).
                let mut buf = vec![0u8; 256 * 1024];
                let pending = r.buffer().to_vec();
                r.consume(pending.len());
                w.write_all(&pending)?;
                loop {
                    let n = r.get_mut().read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    w.write_all(&buf[..n])?;
                }
                w.shutdown(std::net::Shutdown::Write)?;
                return Ok(());
            }
            _ => {
                let mut body =
                    format!("method={}\ntarget={}\n", req.method, req.target).into_bytes();
                body.extend_from_slice(req.raw_head.as_bytes());
                body.extend_from_slice(b"\nbody=");
                body.extend_from_slice(&req.body);
                respond(
                    &mut w,
                    "200 OK",
                    "Content-Type: text/plain\r\nX-App: echo\r\n",
                    if head_req { b"" } else { &body },
                )?;
            }
        }
        w.flush()?;
    }
    Ok(())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:0".to_string();
    let mut log_path = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().unwrap_or(listen),
            "--log" => log_path = args.next(),
            _ => {}
        }
    }
    let l = TcpListener::bind(&listen).expect("bind");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path.unwrap_or_else(|| "/dev/null".into()))
        .expect("log");
    let log = Arc::new(Mutex::new(log));
    println!("listening on {}", l.local_addr().expect("addr"));
    let _ = std::io::stdout().flush();
    for s in l.incoming().flatten() {
        let log = log.clone();
        std::thread::spawn(move || {
            let _ = serve(s, log);
        });
    }
}
