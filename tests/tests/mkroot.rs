//! mkroot end to end: unusual trees, ls, verify, errors, atomic output, determinism.

use std::process::Command;

use httpd_common::webroot::{Encoding, Kind, Webroot};
use tests::{bin, mkroot, write_tree};

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
    let block = String::from_utf8_lossy(w.header_block(css_obj.identity().unwrap())).into_owned();
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
        w.body(w.lookup(b"/link.txt").unwrap().identity().unwrap()),
        b"inside"
    );
    assert!(w.lookup(b"/linkdir/file.txt").is_some());

    let outside = dir.path().join("outside.txt");
    std::fs::write(&outside, b"secret").unwrap();
    std::os::unix::fs::symlink(&outside, src.join("escape.txt")).unwrap();
    let o = run(&[src.as_os_str(), out.as_os_str()]);
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
