//! TLS for the tests: a test CA made at test time (rcgen) with leaf certificates per host, a
//! client stream that is plain TCP or TLS (rustls), and the switch that runs the functional
//! suites over HTTPS (`HTTPD_TEST_TLS=1`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};

/// Whether the suites run over HTTPS (`HTTPD_TEST_TLS=1`).
pub fn tls_mode() -> bool {
    std::env::var("HTTPD_TEST_TLS").is_ok_and(|v| v == "1")
}

/// A certificate authority for one test run: issues leaf certificates into a directory as
/// `NAME.crt` + `NAME.key` (what `--tls-certs` reads); `ca.pem` is its certificate.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
    pub dir: PathBuf,
}

impl TestCa {
    /// A new CA writing into `dir` (created), with `ca.pem` there.
    pub fn new(dir: &Path) -> TestCa {
        std::fs::create_dir_all(dir).expect("certs dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "httpd test CA");
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let pem = cert.pem();
        std::fs::write(dir.join("ca.pem"), &pem).expect("write ca.pem");
        TestCa {
            issuer: Issuer::new(params, key),
            pem,
            dir: dir.to_path_buf(),
        }
    }

    /// The CA certificate's file (for curl --cacert, openssl -CAfile).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A leaf certificate (ECDSA P-256) for `names` (DNS names or IP addresses), with `cn` as
    /// its common name: (chain PEM, key PEM).
    pub fn leaf(&self, cn: &str, names: &[&str]) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<String>>())
                .expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes `NAME.crt` and `NAME.key` into the CA's directory (atomically each: a temporary
    /// file renamed over the old one, as an operator's deploy script does).
    pub fn issue(&self, name: &str, cn: &str, names: &[&str]) {
        let (crt, key) = self.leaf(cn, names);
        write_atomic(&self.dir.join(format!("{name}.key")), key.as_bytes());
        write_atomic(&self.dir.join(format!("{name}.crt")), crt.as_bytes());
    }

    /// The default certificate of the suites: 127.0.0.1, localhost and `*.test`.
    pub fn issue_default(&self) {
        self.issue(
            "__default__",
            "default",
            &["127.0.0.1", "localhost", "x", "*.test", "a.test", "b.test"],
        );
    }

    /// A rustls client trusting this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        client_config(&self.pem)
    }
}

/// Writes a file by rename, so a reader never sees it half written.
pub fn write_atomic(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A rustls client trusting the CA in `ca_pem`, offering http/1.1.
pub fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA pem")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// The suites' CA when they run over HTTPS: made once per test binary.
pub fn suite_ca() -> &'static TestCa {
    static CA: OnceLock<(tempfile::TempDir, TestCa)> = OnceLock::new();
    &CA.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new(dir.path());
        ca.issue_default();
        (dir, ca)
    })
    .1
}

/// A client connection: plain TCP, or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    /// Connects to `addr`: over TLS in the suites' HTTPS mode (SNI `x`), else plain.
    pub fn connect(addr: SocketAddr) -> Stream {
        let s = TcpStream::connect(addr).expect("connect");
        if tls_mode() {
            Stream::tls(s, "x", suite_ca().client_config())
        } else {
            Stream::Plain(s)
        }
    }

    /// TLS over `sock` with `sni`; the handshake happens at the first read or write.
    pub fn tls(sock: TcpStream, sni: &str, cfg: Arc<rustls::ClientConfig>) -> Stream {
        let name = ServerName::try_from(sni.to_string()).expect("server name");
        let conn = rustls::ClientConnection::new(cfg, name).expect("client connection");
        Stream::Tls(Box::new(rustls::StreamOwned::new(conn, sock)))
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) {
        self.tcp().set_read_timeout(t).expect("read timeout");
    }

    /// Ends the sending side: TLS close_notify, then the TCP write shutdown.
    pub fn shutdown_write(&mut self) {
        if let Stream::Tls(t) = self {
            t.conn.send_close_notify();
            let _ = t.conn.complete_io(&mut t.sock);
        }
        let _ = self.tcp().shutdown(std::net::Shutdown::Write);
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            // A server that closes without close_notify (after a Connection: close response
            // framed by length) is an end, not an error, for these tests.
            Stream::Tls(t) => match t.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
                r => r,
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}
