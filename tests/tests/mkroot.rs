//! mkroot end to end: unusual trees, ls, verify, errors, atomic output, determinism, symlinks
//! leading outside the tree.

use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use httpd_common::webroot::{Encoding, Kind, Webroot};
use tests::{Httpd, bin, curl, mkroot, request, write_tree};

fn run(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(bin("mkroot"))
        .args(args)
        .output()
        .expect("run mkroot")
}

#[test]
fn unusual_names_ls_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let deep = format!("{}leaf.txt", "d/".repeat(30));
    let css = "p { margin: 0 }\n".repeat(200);
    write_tree(
        &src,
        &[
            ("index.html", b"<!doctype html><h1>home</h1>"),
            ("with space.txt", b"space"),
            ("ünïcødé/日本.html", "<p>utf8</p>".as_bytes()),
            ("percent%20sign%.txt", b"pct"),
            (deep.as_str(), b"deep"),
            ("assets/site.css", css.as_bytes()),
            ("assets/app.js", b"console.log(1)"),
            ("assets/data.json", b"{\"a\":1}"),
            ("assets/font.woff2", b"wOF2\0\0\0\0binary"),
            (".hidden", b"secret"),
            (".git/config", b"secret"),
            (".errors/404.html", b"<p>custom 404</p>"),
        ],
    );
    let out = dir.path().join("site.webroot");
    let o = mkroot(
        &src,
        &out,
        &["--digest", "--cache-control", "*.css=max-age=3600"],
    );
    let summary = String::from_utf8_lossy(&o.stdout);
    assert!(
        summary.contains("objects") && summary.contains("variants"),
        "{summary}"
    );

    let w = Webroot::open(&out).unwrap();
    for p in [
        "/index.html",
        "/with space.txt",
        "/ünïcødé/日本.html",
        "/percent%20sign%.txt",
        &format!("/{deep}"),
        "/.errors/404.html",
    ] {
        assert!(w.lookup(p.as_bytes()).is_some(), "missing {p}");
    }
    assert!(w.lookup(b"/.hidden").is_none());
    assert!(w.lookup(b"/.git/config").is_none());
    assert_eq!(w.lookup(b"/assets").unwrap().kind, Kind::Redirect);
    assert_eq!(w.lookup(b"/").unwrap().path.as_ref(), b"/");
    let css_obj = w.lookup(b"/assets/site.css").unwrap();
    assert_eq!(&*css_obj.mime, "text/css; charset=utf-8");
    assert_eq!(css_obj.cache_control.as_deref(), Some("max-age=3600"));
    assert!(css_obj.rep(Encoding::Gzip).is_some() && css_obj.rep(Encoding::Brotli).is_some());
    let block = w.header_block(css_obj.identity().unwrap()).unwrap();
    let block = String::from_utf8_lossy(&block).into_owned();
    assert!(block.contains("Repr-Digest: sha-256=:"), "{block}");
    assert!(block.contains("Cache-Control: max-age=3600\r\n"));
    assert_eq!(
        &*w.lookup(b"/assets/app.js").unwrap().mime,
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        &*w.lookup(b"/assets/data.json").unwrap().mime,
        "application/json"
    );
    let font = w.lookup(b"/assets/font.woff2").unwrap();
    assert_eq!(&*font.mime, "font/woff2");
    assert_eq!(font.reps.len(), 1, "no variants for compressed types");

    let ls = run(&["ls".as_ref(), out.as_os_str()]);
    assert!(ls.status.success());
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.contains("/ünïcødé/日本.html") && ls.contains("text/css") && ls.contains("gzip:"),
        "{ls}"
    );
    let v = run(&["verify".as_ref(), out.as_os_str()]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));

    // Flip one body byte: verify names the object and fails.
    let mut bytes = std::fs::read(&out).unwrap();
    let at = w
        .lookup(b"/with space.txt")
        .unwrap()
        .identity()
        .unwrap()
        .body_off() as usize;
    bytes[at] ^= 0x20;
    let bad = dir.path().join("bad.webroot");
    std::fs::write(&bad, &bytes).unwrap();
    let v = run(&["verify".as_ref(), bad.as_os_str()]);
    assert!(!v.status.success());
    assert!(String::from_utf8_lossy(&v.stderr).contains("/with space.txt"));

    // Truncated: refused at open, naming the file.
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let v = run(&["ls".as_ref(), bad.as_os_str()]);
    assert!(!v.status.success());
    assert!(String::from_utf8_lossy(&v.stderr).contains("bad.webroot"));
}

#[test]
fn deterministic_and_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_tree(
        &src,
        &[
            ("a.html", "<p>x</p>".repeat(100).as_bytes()),
            ("b/c.txt", b"c"),
        ],
    );
    let one = dir.path().join("one.webroot");
    let two = dir.path().join("two.webroot");
    mkroot(&src, &one, &[]);
    mkroot(&src, &two, &[]);
    assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&two).unwrap());

    // A failing build leaves the old output untouched and no temporary file behind.
    let before = std::fs::read(&one).unwrap();
    let fifo = src.join("pipe");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let o = run(&[src.as_os_str(), one.as_os_str()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("pipe") && err.contains("special file"),
        "{err}"
    );
    assert_eq!(std::fs::read(&one).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn symlinks_and_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_tree(&src, &[("real/file.txt", b"inside"), ("x.txt", b"x")]);
    std::os::unix::fs::symlink("real/file.txt", src.join("link.txt")).unwrap();
    std::os::unix::fs::symlink("real", src.join("linkdir")).unwrap();
    let out = dir.path().join("o.webroot");
    mkroot(&src, &out, &[]);
    let w = Webroot::open(&out).unwrap();
    assert_eq!(
        w.body(w.lookup(b"/link.txt").unwrap().identity().unwrap())
            .unwrap(),
        b"inside"
    );
    assert!(w.lookup(b"/linkdir/file.txt").is_some());

    let outside = dir.path().join("outside.txt");
    std::fs::write(&outside, b"secret").unwrap();
    std::os::unix::fs::symlink(&outside, src.join("escape.txt")).unwrap();
    let o = run(&[
        "--refuse-outside-links".as_ref(),
        src.as_os_str(),
        out.as_os_str(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("escape.txt") && err.contains("outside"),
        "{err}"
    );
    std::fs::remove_file(src.join("escape.txt")).unwrap();

    // Unreadable files are named (only meaningful when not root: root reads anything).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(src.join("x.txt"), std::fs::Permissions::from_mode(0o000))
            .unwrap();
        let o = run(&[src.as_os_str(), out.as_os_str()]);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("x.txt"));
    }
}

#[test]
fn mime_types_override_and_dotfiles_option() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_tree(
        &src,
        &[
            ("a.css", b"x"),
            ("b.weird", b"y"),
            (".well-known/security.txt", b"z"),
        ],
    );
    let types = dir.path().join("mime.types");
    std::fs::write(&types, "# local\ntext/x-weird weird\ntext/x-special css\n").unwrap();
    let out = dir.path().join("o.webroot");
    mkroot(
        &src,
        &out,
        &[
            "--mime-types",
            types.to_str().unwrap(),
            "--include-dotfiles",
        ],
    );
    let w = Webroot::open(&out).unwrap();
    assert_eq!(
        &*w.lookup(b"/a.css").unwrap().mime,
        "text/x-special; charset=utf-8"
    );
    assert_eq!(
        &*w.lookup(b"/b.weird").unwrap().mime,
        "text/x-weird; charset=utf-8"
    );
    assert!(w.lookup(b"/.well-known/security.txt").is_some());
}

/// Pseudo-random bytes: incompressible, so served as is.
fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// GET `path` from `h` with `Accept-Encoding: gzip`; the body decoded, and the encoding used.
fn get_gzip(h: &Httpd, path: &str) -> (u16, Option<String>, Vec<u8>) {
    let r = request(
        h.addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
        ),
    );
    let enc = r.header("content-encoding").map(str::to_string);
    let body = if enc.as_deref() == Some("gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&r.body[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        r.body
    };
    (r.status, enc, body)
}

/// What each request path must serve: (path, file on disk, has a gzip variant).
fn served(root: &Path) -> Vec<(&'static str, std::path::PathBuf, bool)> {
    vec![
        ("/index.html", root.join("src/index.html"), false),
        ("/licence.txt", root.join("shared/licence.txt"), true),
        ("/ext/a.txt", root.join("ext/a.txt"), true),
        ("/ext/deep/b.css", root.join("ext/deep/b.css"), true),
        ("/ext/deep/blob.bin", root.join("ext/deep/blob.bin"), false),
    ]
}

#[test]
fn outside_links_loops_and_dangling_links() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let src = root.join("src");
    let text = "Permission is hereby granted, free of charge.\n".repeat(100);
    let css = "p { margin: 0 }\n".repeat(300);
    let blob = noise(300 << 10);
    write_tree(root, &[("src/index.html", b"<!doctype html><p>home</p>")]);
    write_tree(root, &[("src/sub/regular.txt", text.as_bytes())]);
    write_tree(root, &[("shared/licence.txt", text.as_bytes())]);
    write_tree(root, &[("ext/a.txt", text.as_bytes())]);
    write_tree(root, &[("ext/deep/b.css", css.as_bytes())]);
    write_tree(root, &[("ext/deep/blob.bin", &blob)]);
    // An absolute link to an outside file, a relative one to an outside directory, a dangling
    // link and a loop (a directory link to an ancestor).
    symlink(root.join("shared/licence.txt"), src.join("licence.txt")).unwrap();
    symlink("../ext", src.join("ext")).unwrap();
    symlink("missing.txt", src.join("gone.txt")).unwrap();
    symlink("..", src.join("sub/up")).unwrap();

    let vhosts = root.join("vhosts");
    std::fs::create_dir(&vhosts).unwrap();
    let out = vhosts.join("__default__");
    let o = mkroot(&src, &out, &[]);
    let summary = String::from_utf8_lossy(&o.stdout);
    assert!(
        summary.contains("2 outside link(s) followed")
            && summary.contains("1 loop(s) skipped")
            && summary.contains("1 dangling link(s) skipped"),
        "{summary}"
    );
    let warnings = String::from_utf8_lossy(&o.stderr);
    let warned = |name: &str, what: &str| {
        warnings
            .lines()
            .any(|l| l.contains("warning") && l.contains(name) && l.contains(what))
    };
    assert!(warned("/src/sub/up:", "loop"), "{warnings}");
    assert!(warned("/src/gone.txt:", "dangling"), "{warnings}");
    assert_eq!(warnings.lines().count(), 2, "{warnings}");

    let w = Webroot::open(&out).unwrap();
    assert_eq!(w.lookup(b"/ext").unwrap().kind, Kind::Redirect);
    assert!(w.lookup(b"/sub/regular.txt").is_some());
    for p in [&b"/gone.txt"[..], b"/sub/up", b"/sub/up/index.html"] {
        assert!(w.lookup(p).is_none(), "{}", String::from_utf8_lossy(p));
    }

    let h = Httpd::start(&vhosts, &[]);
    for (path, file, compressible) in served(root) {
        let want = std::fs::read(&file).unwrap();
        let got = curl(&["-o", "-", &h.url(path)]);
        assert!(got.status.success(), "{path}");
        assert_eq!(got.stdout.len(), want.len(), "{path}");
        assert!(got.stdout == want, "{path}: body differs");
        let (status, enc, body) = get_gzip(&h, path);
        assert_eq!(status, 200, "{path}");
        assert_eq!(
            enc.as_deref() == Some("gzip"),
            compressible,
            "{path}: {enc:?}"
        );
        assert!(body == want, "{path}: gzip body differs");
    }
    let (status, _, _) = get_gzip(&h, "/gone.txt");
    assert_eq!(status, 404);
    drop(h);

    // Refused on request: the outside links are named, and no webroot is written.
    let strict = root.join("strict.webroot");
    let o = run(&[
        "--refuse-outside-links".as_ref(),
        src.as_os_str(),
        strict.as_os_str(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    for link in ["/src/licence.txt:", "/src/ext:"] {
        assert!(
            err.lines()
                .any(|l| l.contains(link) && l.contains("outside")),
            "{err}"
        );
    }
    assert!(err.contains("2 problem(s)"), "{err}");
    assert!(!strict.exists());
    let leftovers: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
