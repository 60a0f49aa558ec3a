//! Differential parsing: every case of tests/differential/diff.py (request heads and bodies
//! around each known ambiguity: Content-Length and Transfer-Encoding spellings and conflicts,
//! chunk sizes and extensions, whitespace before colons, obs-fold, bare CR/LF, controls,
//! absolute-form with another Host, HTTP/1.0 keep-alive, Expect, Upgrade) goes through httpd to
//! an echo upstream that parses what it receives with h11; h11 on the case's bytes is the
//! reference. httpd must either refuse a request (4xx, nothing of it forwarded) or forward
//! exactly the requests the reference read: zero disagreements. The same cases through nginx
//! (when installed) are reported, not judged: target/differential.md lists where the two
//! differ (docs/reliability.md).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tests::{Httpd, ci};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The venv `cargo xtask setup` makes, with h11 in it.
fn python() -> Option<PathBuf> {
    let p = root().join("target/pyenv/bin/python");
    p.is_file().then_some(p)
}

/// nginx as a reverse proxy in front of `upstream`, on a free port (killed on drop).
struct Nginx {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(upstream: &str) -> Option<Nginx> {
        // Debian's nginx, which `cargo xtask setup` installs.
        let nginx = Path::new("/usr/sbin/nginx");
        if !nginx.is_file() {
            assert!(
                !ci(),
                "CI=true but no /usr/sbin/nginx: run `cargo xtask setup`"
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let d = dir.path().display();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  upstream app {{ server {upstream}; keepalive 8; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\";
      proxy_set_header Host $http_host; proxy_ignore_client_abort on;
    }}
  }}
}}
"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).expect("nginx.conf");
        let child = Command::new(nginx)
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .ok()?;
        let addr = format!("127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nginx did not start on {addr}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Some(Nginx {
            child,
            addr,
            _dir: dir,
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn httpd_forwards_exactly_what_the_reference_parser_reads() {
    let Some(py) = python() else {
        assert!(
            !ci(),
            "CI=true but target/pyenv (h11) is missing: run `cargo xtask setup`"
        );
        eprintln!("skipped: no target/pyenv (h11); `cargo xtask setup` makes it");
        return;
    };
    let mut diff = Command::new(py)
        .arg(root().join("tests/differential/diff.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start diff.py");
    let mut stdin = diff.stdin.take().expect("stdin");
    let mut out = BufReader::new(diff.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("upstream line");
    let upstream = line
        .trim()
        .strip_prefix("upstream ")
        .expect("upstream address")
        .to_string();

    let vhosts = tempfile::tempdir().expect("tempdir");
    let httpd = Httpd::start(vhosts.path(), &["--upstream", &upstream]);
    let nginx = Nginx::start(&upstream);
    let report = root().join("target/differential.md");
    writeln!(stdin, "proxy httpd {}", httpd.addr).expect("write");
    if let Some(n) = &nginx {
        writeln!(stdin, "proxy nginx {}", n.addr).expect("write");
    }
    writeln!(stdin, "report {}", report.display()).expect("write");
    writeln!(stdin, "go").expect("write");
    drop(stdin);

    let mut httpd_line = None;
    let mut lines = Vec::new();
    for l in out.lines().map_while(Result::ok) {
        eprintln!("[diff] {l}");
        if l.starts_with("proxy httpd ") {
            httpd_line = Some(l.clone());
        }
        let done = l == "done";
        lines.push(l);
        if done {
            break;
        }
    }
    let _ = diff.kill();
    let _ = diff.wait();
    drop(nginx);
    let (code, log) = httpd.stop_and_log();
    let summary = httpd_line.unwrap_or_else(|| panic!("no result for httpd: {lines:?}"));
    let field = |k: &str| -> usize {
        summary
            .split_whitespace()
            .find_map(|f| f.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {summary}"))
    };
    assert!(field("cases") >= 400, "too few cases: {summary}");
    let problems: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("disagree httpd "))
        .collect();
    assert_eq!(field("disagreements"), 0, "{summary}\n{problems:#?}");
    assert!(
        !log.iter().any(|l| l.contains("panicked")),
        "httpd panicked: {log:?}"
    );
    assert!(code.is_some(), "httpd did not exit cleanly");
}
