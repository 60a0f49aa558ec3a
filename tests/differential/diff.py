#!/usr/bin/env python3
"""Differential parsing: does a proxy forward exactly the requests a reference parser sees?

Started by tests/tests/differential.rs with the Python of `cargo xtask setup`'s venv (h11 from
PyPI is the reference). Protocol on stdin/stdout, one line each:
  -> prints   `upstream 127.0.0.1:PORT`   (the echo upstream the proxies forward to)
  <- reads    `proxy NAME 127.0.0.1:PORT` lines, then `go`
  -> prints   one JSON line: the summary (cases, outcomes, disagreements per proxy, and where
              the proxies differ from each other), then exits.

Each case is a byte string sent on a fresh connection to the proxy (then a half-close); the
proxy's answers are read to EOF. The echo upstream parses what reaches it with h11 and records
every request (method, target, Host, body). The invariant, per case and proxy: the requests
the upstream received are, in order, the first requests the reference read from the case's
bytes (same method, target, Host and body); where the proxy forwarded fewer, it answered the
next one with an error status (it refused it) and forwarded nothing of it. More requests
than the reference, or any difference in one of them, is a disagreement: the proxy and an
origin server behind it could read the same bytes differently (request smuggling).
"""

import json
import socket
import sys
import threading
import time

import h11

MAX_EVENT = 64 * 1024
CASE_TIMEOUT = 5.0


def status_for(req):
    """The echo's status: 200, but 405 to CONNECT (a 2xx would open a tunnel)."""
    return 405 if req["method"] == "CONNECT" else 200


# --- the reference -----------------------------------------------------------------------------


def req_record(ev):
    host = None
    for name, value in ev.headers:
        if name == b"host":
            host = value
    return {
        "method": ev.method.decode("latin-1"),
        "target": ev.target.decode("latin-1"),
        "host": None if host is None else host.decode("latin-1"),
        "version": ev.http_version.decode("latin-1"),
        "body": "",
    }


def keeps_alive_10(ev):
    """An HTTP/1.0 request asking to keep the connection (RFC 9112 section 9.3)."""
    if ev.http_version != b"1.0":
        return False
    tokens = []
    for name, value in ev.headers:
        if name == b"connection":
            tokens += [t.strip().lower() for t in value.split(b",")]
    return b"keep-alive" in tokens and b"close" not in tokens


def reference(data):
    """How h11, as a server, reads `data` followed by EOF: the complete requests in order, the
    error that stopped it (None if none), and whether a request was cut short by the EOF.

    Two rules of RFC 9112 that h11 leaves out are added around it: empty lines (CRLF) before
    the first request line are ignored (section 2.2), and an HTTP/1.0 request with
    `Connection: keep-alive` keeps the connection (section 9.3): the bytes after it are read as
    a new connection's."""
    while data.startswith(b"\r\n"):
        data = data[2:]
    reqs, cur, err = [], None, None
    while True:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_EVENT)
        conn.receive_data(data)
        conn.receive_data(b"")
        again = None
        while True:
            try:
                ev = conn.next_event()
            except h11.RemoteProtocolError as e:
                err = str(e) or type(e).__name__
                break
            if ev is h11.NEED_DATA or ev is h11.PAUSED or isinstance(ev, h11.ConnectionClosed):
                break
            if isinstance(ev, h11.Request):
                cur = req_record(ev)
                keep_10 = keeps_alive_10(ev)
                body = bytearray()
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                cur["body"] = bytes(body).decode("latin-1")
                reqs.append(cur)
                done, cur = cur, None
                if conn.our_state is h11.SEND_RESPONSE:
                    conn.send(h11.Response(status_code=status_for(done),
                                           headers=[("content-length", "0")]))
                    conn.send(h11.EndOfMessage())
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    if keep_10 and status_for(done) == 200:
                        again = conn.trailing_data[0]
                    break
                conn.start_next_cycle()
        if again is None:
            return {"requests": reqs, "error": err, "cut": cur is not None}
        data = again


# --- the echo upstream --------------------------------------------------------------------------


class Upstream:
    """Parses what reaches it with h11 and records each request; answers 200 to each."""

    def __init__(self):
        self.lock = threading.Lock()
        self.records = []
        self.busy = 0
        self.last = time.monotonic()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        threading.Thread(target=self.accept, daemon=True).start()

    def addr(self):
        return "%s:%d" % self.sock.getsockname()

    def note(self, rec):
        with self.lock:
            self.records.append(rec)
            self.last = time.monotonic()

    def accept(self):
        while True:
            s, _ = self.sock.accept()
            threading.Thread(target=self.serve, args=(s,), daemon=True).start()

    def serve(self, s):
        with self.lock:
            self.busy += 1
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_EVENT)
        cur, body = None, bytearray()
        try:
            while True:
                try:
                    ev = conn.next_event()
                except h11.RemoteProtocolError as e:
                    self.note({"error": str(e), "partial": cur})
                    return
                if ev is h11.NEED_DATA:
                    data = s.recv(65536)
                    with self.lock:
                        self.last = time.monotonic()
                    conn.receive_data(data)
                    continue
                if isinstance(ev, h11.ConnectionClosed) or ev is h11.PAUSED:
                    if cur is not None:
                        self.note({"cut": cur})
                    return
                if isinstance(ev, h11.Request):
                    cur, body = req_record(ev), bytearray()
                elif isinstance(ev, h11.Data):
                    body += ev.data
                elif isinstance(ev, h11.EndOfMessage):
                    cur["body"] = bytes(body).decode("latin-1")
                    self.note({"request": cur})
                    payload = b"ok\n"
                    s.sendall(
                        conn.send(
                            h11.Response(
                                status_code=status_for(cur),
                                headers=[("content-length", str(len(payload)))],
                            )
                        )
                        + conn.send(h11.Data(data=payload))
                        + conn.send(h11.EndOfMessage())
                    )
                    cur = None
                    if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                        return
                    conn.start_next_cycle()
        except OSError:
            if cur is not None:
                self.note({"cut": cur})
        finally:
            with self.lock:
                self.busy -= 1
            s.close()

    def mark(self):
        with self.lock:
            return len(self.records)

    def since(self, mark):
        """Records after `mark`, once the upstream has been quiet for 30 ms."""
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            with self.lock:
                quiet = time.monotonic() - self.last > 0.03
            if quiet:
                break
            time.sleep(0.005)
        with self.lock:
            return self.records[mark:]


# --- the client side ----------------------------------------------------------------------------


def statuses(raw):
    """Status codes of the responses in `raw` (a proxy's answers to one connection), as far as
    they can be framed: Content-Length, chunked, or to the end."""
    out, pos = [], 0
    while pos < len(raw):
        end = raw.find(b"\r\n\r\n", pos)
        if end < 0 or not raw.startswith(b"HTTP/", pos):
            break
        lines = raw[pos:end].split(b"\r\n")
        try:
            code = int(lines[0].split(b" ")[1])
        except (IndexError, ValueError):
            break
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        pos = end + 4
        if 100 <= code < 200:
            continue
        out.append(code)
        if code in (204, 304):
            continue
        if b"content-length" in headers:
            pos += int(headers[b"content-length"])
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                eol = raw.find(b"\r\n", pos)
                if eol < 0:
                    return out
                size = int(raw[pos:eol].split(b";")[0], 16)
                pos = eol + 2 + size + 2
                if size == 0:
                    break
        else:
            break
    return out


def exchange(addr, data):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=CASE_TIMEOUT)
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    got = bytearray()
    deadline = time.monotonic() + CASE_TIMEOUT
    try:
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except OSError:
        pass
    s.close()
    return bytes(got)


def same(ref, up):
    """Is `up` (what the upstream got) the request `ref` (what the reference read)?"""
    if ref["method"] != up["method"] or ref["body"] != up["body"]:
        return False
    # RFC 9112 3.2.2: an absolute-form target's authority is the host, whatever Host says; a
    # proxy may pass the target on as it came or in origin-form (the path).
    t = ref["target"]
    host, targets = ref["host"], [t]
    for scheme in ("http://", "https://"):
        if t.lower().startswith(scheme):
            rest = t[len(scheme):]
            cut = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0] or [len(rest)])
            host = rest[:cut]
            path = rest[cut:]
            targets.append(path if path.startswith("/") else "/" + path)
    if up["target"] not in targets:
        return False
    return host is None or up["host"] is None or host.lower() == up["host"].lower()


def judge(ref, records, codes):
    """(outcome, problem): outcome is `same`, `refused` or `stricter`; problem is None or why
    this is a disagreement."""
    got = [r["request"] for r in records if "request" in r]
    bad = [r for r in records if "error" in r]
    if bad:
        return "forwarded-unparsable", "the upstream could not parse what it got: %s" % bad[0]["error"]
    want = ref["requests"]
    if len(got) > len(want):
        return "more", "forwarded %d requests, the reference read %d" % (len(got), len(want))
    for i, (w, g) in enumerate(zip(want, got)):
        if not same(w, g):
            return "different", "request %d: reference %s, upstream got %s" % (i, w, g)
    if len(got) == len(want):
        return ("refused" if ref["error"] else "same"), None
    # Fewer than the reference: the next one must have been refused with an error status.
    nxt = codes[len(got)] if len(codes) > len(got) else None
    if nxt is not None and nxt >= 400:
        return "stricter", None
    if nxt is None:
        if ref["cut"] and len(got) == len(want):
            return "same", None
        return "silent", "request %d: no answer and not forwarded" % len(got)
    return "dropped", "request %d got %s but was not forwarded" % (len(got), nxt)


# --- the cases ----------------------------------------------------------------------------------

FOLLOW = b"GET /follow HTTP/1.1\r\nHost: a.test\r\n\r\n"


def head(lines, eol=b"\r\n"):
    return eol.join(lines) + eol + eol


def cases():
    out = []

    def add(name, data, follow=True):
        out.append((name, data))
        if follow:
            out.append((name + " +follow", data + FOLLOW))

    body = b"hello"
    # Content-Length spellings and duplicates.
    for cl in [b"5", b"05", b"+5", b"-5", b" 5", b"5 ", b"5\t", b"0x5", b"5.0", b"", b"5, 5",
               b"5,6", b"5 5", b"99999999999999999999", b"18446744073709551616", b"\x005"]:
        add("CL %r" % cl, head([b"POST /cl HTTP/1.1", b"Host: a.test", b"Content-Length: " + cl]) + body)
    for a, b_ in [(b"5", b"5"), (b"5", b"6"), (b"5", b"0"), (b"0", b"5")]:
        add("CL twice %r %r" % (a, b_), head([b"POST /cl2 HTTP/1.1", b"Host: a.test",
                                             b"Content-Length: " + a, b"Content-Length: " + b_]) + body)
    # Transfer-Encoding spellings, with and without Content-Length.
    chunked = b"5\r\nhello\r\n0\r\n\r\n"
    for te in [b"chunked", b"Chunked", b"CHUNKED", b" chunked", b"chunked ", b"chunked\t",
               b"\tchunked", b"chunked, chunked", b"gzip, chunked", b"chunked, gzip", b"identity",
               b"identity, chunked", b"chunked;q=1", b"xchunked", b"chunked\x0b", b"\x0bchunked",
               b"chu nked", b"\"chunked\"", b"chunked,", b",chunked", b""]:
        for extra in [[], [b"Content-Length: 5"], [b"Content-Length: 30"]]:
            add("TE %r %r" % (te, extra), head([b"POST /te HTTP/1.1", b"Host: a.test",
                                               b"Transfer-Encoding: " + te] + extra) + chunked)
    add("TE twice", head([b"POST /te2 HTTP/1.1", b"Host: a.test", b"Transfer-Encoding: gzip",
                          b"Transfer-Encoding: chunked"]) + chunked)
    add("TE chunked twice", head([b"POST /te3 HTTP/1.1", b"Host: a.test", b"Transfer-Encoding: chunked",
                                  b"Transfer-Encoding: chunked"]) + chunked)
    add("TE in 1.0", head([b"POST /te10 HTTP/1.0", b"Host: a.test", b"Transfer-Encoding: chunked"]) + chunked)
    add("CL then TE", head([b"POST /clte HTTP/1.1", b"Host: a.test", b"Content-Length: 4",
                            b"Transfer-Encoding: chunked"]) + b"1\r\nZ\r\n0\r\n\r\n")
    # Whitespace around the colon and in names; obs-fold.
    for line in [b"Content-Length : 5", b"Content-Length\t: 5", b" Content-Length: 5",
                 b"Content-Length:5", b"Content-Length:\t5", b"Content-Length: 5\r\n x",
                 b"X: y\r\n Content-Length: 5", b"Content-Length:\r\n 5", b"Content Length: 5",
                 b"Content-Length\x00: 5", b"Content-Length\r: 5"]:
        add("header %r" % line, head([b"POST /ws HTTP/1.1", b"Host: a.test", line]) + body)
    for line in [b"Transfer-Encoding : chunked", b"Transfer-Encoding:\r\n chunked",
                 b"X: y\r\n Transfer-Encoding: chunked", b" Transfer-Encoding: chunked",
                 b"Transfer-Encoding\t: chunked"]:
        add("te header %r" % line, head([b"POST /wt HTTP/1.1", b"Host: a.test", line,
                                        b"Content-Length: 15"]) + chunked)
    # Chunk sizes, extensions and line ends.
    for size in [b"5", b"05", b"0005", b"5 ", b" 5", b"5\t", b"+5", b"-5", b"0x5", b"5;a=b",
                 b"5;a=\"b c\"", b"5 ;a=b", b"5;", b"5;a=\x00", b"fffffffffffffffff5",
                 b"10000000000000005", b"", b"G", b"5\x00"]:
        add("chunk size %r" % size, head([b"POST /cs HTTP/1.1", b"Host: a.test",
                                          b"Transfer-Encoding: chunked"]) + size + b"\r\nhello\r\n0\r\n\r\n")
    for tail in [b"5\r\nhelloXX0\r\n\r\n", b"5\r\nhello\n0\r\n\r\n", b"5\nhello\n0\n\n",
                 b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", b"5\r\nhello\r\n0\r\nX-T: 1\r\n",
                 b"5\r\nhello\r\n0\r\n", b"5\r\nhello\r\n0\r\nContent-Length: 9\r\n\r\n",
                 b"5\rhello\r\n0\r\n\r\n", b"3\r\nhello\r\n0\r\n\r\n", b"6\r\nhello\r\n0\r\n\r\n",
                 b"5\r\nhello\r\n0;x=y\r\n\r\n", b"5\r\nhello\r\n00\r\n\r\n"]:
        add("chunked %r" % tail, head([b"POST /ct HTTP/1.1", b"Host: a.test",
                                       b"Transfer-Encoding: chunked"]) + tail)
    # Bare CR, bare LF, NUL and other controls.
    add("LF line ends", head([b"GET /lf HTTP/1.1", b"Host: a.test"], b"\n"))
    add("LF body", head([b"POST /lfb HTTP/1.1", b"Host: a.test", b"Content-Length: 5"], b"\n") + body)
    add("mixed line ends", b"GET /mx HTTP/1.1\r\nHost: a.test\n\r\n")
    for ctl in [b"\x00", b"\r", b"\x01", b"\x08", b"\x0b", b"\x0c", b"\x1b", b"\x7f", b"\xff", b"\x80"]:
        add("ctl in value %r" % ctl, head([b"GET /cv HTTP/1.1", b"Host: a.test", b"X-A: a" + ctl + b"b"]))
        add("ctl in name %r" % ctl, head([b"GET /cn HTTP/1.1", b"Host: a.test", b"X-" + ctl + b"A: b"]))
        add("ctl in target %r" % ctl, head([b"GET /t" + ctl + b"x HTTP/1.1", b"Host: a.test"]))
        add("ctl in host %r" % ctl, head([b"GET /ch HTTP/1.1", b"Host: a" + ctl + b".test"]))
    # Request lines and targets.
    for line in [b"GET http://b.test/abs HTTP/1.1", b"GET http://b.test HTTP/1.1",
                 b"GET http://b.test:8080/abs?q HTTP/1.1", b"GET https://b.test/abs HTTP/1.1",
                 b"GET HTTP://B.TEST/abs HTTP/1.1", b"GET http://user@b.test/ HTTP/1.1",
                 b"GET /frag#x HTTP/1.1", b"GET /#/../x HTTP/1.1", b"GET /caf\xc3\xa9 HTTP/1.1",
                 b"GET /a b HTTP/1.1", b"GET  /two-spaces HTTP/1.1", b"GET /x  HTTP/1.1",
                 b"GET\t/tab HTTP/1.1", b"GET * HTTP/1.1", b"OPTIONS * HTTP/1.1", b"GET  HTTP/1.1",
                 b"GET b.test:80 HTTP/1.1", b"CONNECT b.test:443 HTTP/1.1", b"get /lower HTTP/1.1",
                 b"G(T /paren HTTP/1.1", b"GET /v HTTP/1.2", b"GET /v HTTP/2.0", b"GET /v HTTP/1.10",
                 b"GET /v http/1.1", b"GET /v HTTP/1.1 ", b"GET /v", b"GET /v HTTP/1", b"/v HTTP/1.1",
                 b"GET /../../etc/passwd HTTP/1.1", b"GET /%2e%2e/x HTTP/1.1", b"GET ?q HTTP/1.1"]:
        add("line %r" % line, head([line, b"Host: a.test"]))
    # Host.
    for hosts in [[], [b"Host: a.test", b"Host: b.test"], [b"Host: a.test", b"Host: a.test"],
                  [b"Host:"], [b"Host: a.test:80"], [b"Host: a.test, b.test"], [b"Host: a test"],
                  [b"Host: [::1]:80"], [b"Host: a.test/x"], [b"Host: a@b.test"]]:
        add("host %r" % hosts, head([b"GET /h HTTP/1.1"] + hosts))
    add("1.0 no host", head([b"GET /h10 HTTP/1.0"]))
    # HTTP/1.0 keep-alive and pipelining; bodies without framing.
    add("1.0 keep-alive", head([b"GET /ka HTTP/1.0", b"Host: a.test", b"Connection: keep-alive"]))
    add("1.0 body no CL", head([b"POST /nb HTTP/1.0", b"Host: a.test"]) + body, follow=False)
    add("1.1 body no CL", head([b"POST /nb HTTP/1.1", b"Host: a.test"]) + body)
    add("GET with body", head([b"GET /gb HTTP/1.1", b"Host: a.test", b"Content-Length: 5"]) + body)
    add("connection close", head([b"GET /cc HTTP/1.1", b"Host: a.test", b"Connection: close"]))
    add("connection close 1.0 ka", head([b"GET /cc HTTP/1.0", b"Host: a.test", b"Connection: keep-alive, close"]))
    # Expect and Upgrade.
    for exp in [b"100-continue", b"100-Continue", b"200-ok", b""]:
        add("expect %r" % exp, head([b"POST /ex HTTP/1.1", b"Host: a.test", b"Expect: " + exp,
                                     b"Content-Length: 5"]) + body)
    add("expect 1.0", head([b"POST /ex HTTP/1.0", b"Host: a.test", b"Expect: 100-continue",
                            b"Content-Length: 5"]) + body)
    add("upgrade refused by app", head([b"GET /up HTTP/1.1", b"Host: a.test", b"Connection: Upgrade",
                                        b"Upgrade: websocket"]))
    add("upgrade with body", head([b"POST /up HTTP/1.1", b"Host: a.test", b"Connection: Upgrade",
                                   b"Upgrade: websocket", b"Content-Length: 5"]) + body)
    add("upgrade no connection", head([b"GET /up HTTP/1.1", b"Host: a.test", b"Upgrade: websocket"]))
    # Sizes near the limits: a long header, many headers.
    add("long header", head([b"GET /long HTTP/1.1", b"Host: a.test", b"X-L: " + b"a" * 30000]))
    add("many headers", head([b"GET /many HTTP/1.1", b"Host: a.test"] +
                             [b"X-%d: v" % i for i in range(120)]))
    # Prefixes: empty lines before a request (RFC 9112 2.2 allows one CRLF).
    add("leading CRLF", b"\r\n" + head([b"GET /lead HTTP/1.1", b"Host: a.test"]))
    add("leading LF", b"\n" + head([b"GET /lead HTTP/1.1", b"Host: a.test"]))
    add("three CRLF", b"\r\n\r\n\r\n" + head([b"GET /lead HTTP/1.1", b"Host: a.test"]))
    return out


# --- main ---------------------------------------------------------------------------------------


def report(summary, names, path):
    """The markdown for docs/reliability.md: outcomes per proxy, then where they differ."""
    kinds = ["same", "refused", "stricter", "more", "different", "forwarded-unparsable", "silent",
             "dropped"]
    lines = ["| proxy | cases | " + " | ".join(kinds) + " | disagreements |",
             "|---|---:|" + "---:|" * len(kinds) + "---:|"]
    for n in names:
        p = summary["proxies"][n]
        lines.append("| %s | %d | %s | %d |" % (
            n, summary["cases"], " | ".join(str(p["outcomes"].get(k, 0)) for k in kinds),
            len(p["disagreements"])))
    if len(names) > 1:
        lines += ["", "| case | reference (h11) | " + " | ".join(names) + " |",
                  "|---|---|" + "---|" * len(names)]
        for d in summary["differ"]:
            cells = [d["case"], d["reference"]] + [d[n] for n in names]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    up = Upstream()
    print("upstream " + up.addr(), flush=True)
    proxies, report_path = [], None
    for line in sys.stdin:
        line = line.strip()
        if line == "go":
            break
        if line.startswith("proxy "):
            _, name, addr = line.split()
            proxies.append((name, addr))
        if line.startswith("report "):
            report_path = line.split(" ", 1)[1]
    all_cases = cases()
    summary = {"cases": len(all_cases), "proxies": {}, "differ": []}
    per_case = {}
    for name, addr in proxies:
        outcomes, problems = {}, []
        for cname, data in all_cases:
            ref = reference(data)
            mark = up.mark()
            raw = exchange(addr, data)
            recs = up.since(mark)
            codes = statuses(raw)
            outcome, problem = judge(ref, recs, codes)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            got = len([r for r in recs if "request" in r])
            per_case.setdefault(cname, {})[name] = (outcome, got, codes[:4])
            if problem:
                problems.append({"case": cname, "problem": problem, "statuses": codes,
                                 "reference": "%d read, error %s" % (len(ref["requests"]), ref["error"])})
        summary["proxies"][name] = {"outcomes": outcomes, "disagreements": problems}
        print("proxy %s cases=%d disagreements=%d %s" % (
            name, len(all_cases), len(problems),
            " ".join("%s=%d" % kv for kv in sorted(outcomes.items()))), flush=True)
        for p in problems[:30]:
            print("disagree %s %r: %s (reference: %s; statuses %s)" % (
                name, p["case"], p["problem"], p["reference"], p["statuses"]), flush=True)
    names = [n for n, _ in proxies]
    if len(names) > 1:
        for cname, _ in all_cases:
            row = per_case[cname]
            if len({(row[n][0], row[n][1]) for n in names}) > 1:
                ref = reference(dict(all_cases)[cname])
                summary["differ"].append({
                    "case": cname,
                    "reference": "%d read%s" % (len(ref["requests"]),
                                                ", then: " + ref["error"] if ref["error"] else ""),
                    **{n: "%s, %d forwarded, statuses %s" % (row[n][0], row[n][1], row[n][2])
                       for n in names},
                })
        print("differ %d" % len(summary["differ"]), flush=True)
    if report_path:
        report(summary, names, report_path)
    print("done", flush=True)


if __name__ == "__main__":
    main()
