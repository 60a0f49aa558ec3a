//! Response heads and the built-in error pages.

pub const SERVER: &str = concat!("httpd/", env!("CARGO_PKG_VERSION"));

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Status line, Server, Date and the Connection header a client of this version needs.
pub fn prefix(buf: &mut Vec<u8>, status: u16, date: &str, keep_alive: bool, minor: u8) {
    // Hot path: plain byte copies, no formatting machinery.
    let digits = [
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ];
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(&digits);
    buf.push(b' ');
    buf.extend_from_slice(reason(status).as_bytes());
    buf.extend_from_slice(b"\r\nServer: ");
    buf.extend_from_slice(SERVER.as_bytes());
    buf.extend_from_slice(b"\r\nDate: ");
    buf.extend_from_slice(date.as_bytes());
    buf.extend_from_slice(b"\r\n");
    if !keep_alive {
        buf.extend_from_slice(b"Connection: close\r\n");
    } else if minor == 0 {
        buf.extend_from_slice(b"Connection: keep-alive\r\n");
    }
}

/// The built-in HTML body of an error status.
pub fn error_body(status: u16) -> String {
    let r = reason(status);
    format!(
        "<!doctype html>\n<html><head><title>{status} {r}</title></head>\n<body><h1>{status} {r}</h1><hr><p>{SERVER}</p></body></html>\n"
    )
}
