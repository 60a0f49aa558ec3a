use super::*;
use proptest::prelude::*;
use std::io::Cursor;

fn rep(encoding: Encoding, body: &[u8]) -> InputRep {
    InputRep {
        encoding,
        body: Body::Bytes(body.to_vec()),
        len: body.len() as u64,
        hash: *blake3::hash(body).as_bytes(),
        sha256: None,
    }
}

fn file(path: &str, body: &[u8]) -> InputObject {
    InputObject::File {
        path: path.as_bytes().to_vec(),
        mime: "text/plain; charset=utf-8".into(),
        mtime: 1_700_000_000,
        cache_control: None,
        reps: vec![rep(Encoding::Identity, body)],
    }
}

fn build(objects: Vec<InputObject>) -> Vec<u8> {
    let mut c = Cursor::new(Vec::new());
    write_webroot(
        &mut c,
        std::path::Path::new("mem"),
        objects,
        &WriteOptions::default(),
    )
    .unwrap();
    c.into_inner()
}

fn open_bytes(bytes: &[u8]) -> Result<Webroot> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.webroot");
    std::fs::write(&p, bytes).unwrap();
    Webroot::open(&p)
}

fn sample() -> Vec<u8> {
    let mut objs = vec![
        file("/index.html", b"<h1>hi</h1>"),
        file("/a/b.txt", b"bee"),
        file("/a/index.html", b"<p>a</p>"),
        InputObject::Redirect {
            path: b"/a".to_vec(),
        },
        InputObject::Alias {
            path: b"/a/".to_vec(),
            target: b"/a/index.html".to_vec(),
        },
        InputObject::Alias {
            path: b"/".to_vec(),
            target: b"/index.html".to_vec(),
        },
    ];
    if let InputObject::File { reps, .. } = &mut objs[1] {
        reps.push(rep(Encoding::Gzip, b"gzipped-bytes"));
    }
    build(objs)
}

#[test]
fn lookup_and_aliases() {
    let w = open_bytes(&sample()).unwrap();
    let o = w.lookup(b"/a/b.txt").unwrap();
    assert_eq!(w.body(o.identity().unwrap()).unwrap(), b"bee");
    assert_eq!(
        w.body(o.rep(Encoding::Gzip).unwrap()).unwrap(),
        b"gzipped-bytes"
    );
    assert!(o.has_variants());
    let hb = String::from_utf8(w.header_block(o.identity().unwrap()).unwrap()).unwrap();
    assert!(hb.contains("Vary: Accept-Encoding\r\n"), "{hb}");
    assert!(hb.ends_with("\r\n\r\n"));
    assert_eq!(w.lookup(b"/a").unwrap().kind, Kind::Redirect);
    assert_eq!(
        w.body(w.lookup(b"/a/").unwrap().identity().unwrap())
            .unwrap(),
        b"<p>a</p>"
    );
    assert_eq!(
        w.body(w.lookup(b"/").unwrap().identity().unwrap()).unwrap(),
        b"<h1>hi</h1>"
    );
    assert!(w.lookup(b"/missing").is_none());
    for o in w.objects() {
        for r in &o.reps {
            assert_eq!(r.body_off() % ALIGN, 0);
        }
    }
    assert!(w.verify().is_empty());
}

#[test]
fn deterministic() {
    assert_eq!(sample(), sample());
}

#[test]
fn every_truncation_is_refused() {
    let b = sample();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.webroot");
    // Every section boundary and then some.
    let mut cuts: Vec<usize> = (0..b.len()).step_by(509).collect();
    cuts.extend([0, 1, 7, 8, 127, 128, 4095, 4096, 4097, b.len() - 1]);
    for cut in cuts {
        std::fs::write(&p, &b[..cut]).unwrap();
        let e = Webroot::open(&p).unwrap_err().to_string();
        assert!(e.contains("t.webroot"), "cut {cut}: {e}");
    }
}

#[test]
fn wrong_version_and_magic() {
    let mut b = sample();
    b[8] = 9;
    let e = open_bytes(&b).unwrap_err();
    assert!(matches!(e, Error::Version { found: 9, .. }), "{e}");
    let mut b = sample();
    b[0] = b'X';
    assert!(matches!(
        open_bytes(&b).unwrap_err(),
        Error::BadMagic { .. }
    ));
}

#[test]
fn flipped_bits_in_each_section() {
    let b = sample();
    let index_off = layout::get_u64(&b, layout::H_INDEX_OFF) as usize;
    let meta_off = layout::get_u64(&b, layout::H_META_OFF) as usize;
    // Header, index, meta: refused at open.
    for at in [
        16usize,
        30,
        100,
        index_off + 3,
        index_off + 20,
        meta_off + 1,
        b.len() - 2,
    ] {
        let mut c = b.clone();
        c[at] ^= 0x10;
        let e = open_bytes(&c).unwrap_err().to_string();
        assert!(e.contains("t.webroot"), "{at}: {e}");
    }
    // Body: opens (bodies are not hashed at open) but verify names the object.
    let w = open_bytes(&b).unwrap();
    let at = w
        .lookup(b"/a/b.txt")
        .unwrap()
        .identity()
        .unwrap()
        .body_off() as usize;
    let mut c = b.clone();
    c[at] ^= 1;
    let w = open_bytes(&c).unwrap();
    let problems = w.verify();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "/a/b.txt");
}

/// Found by fuzzing: an index entry moved out of its probe sequence (checksums resealed) was
/// accepted, and its object could never be looked up.
#[test]
fn unreachable_index_entry_is_refused() {
    let b = sample();
    let index_off = layout::get_u64(&b, layout::H_INDEX_OFF) as usize;
    let buckets = layout::get_u32(&b, layout::H_BUCKETS) as usize;
    let entry = |k: usize| index_off + k * layout::BUCKET_LEN;
    let slot = |b: &[u8], k: usize| layout::get_u32(b, entry(k) + 8);
    // An entry whose hash's own bucket is preceded by an empty one: move it there.
    let (from, to) = (0..buckets)
        .filter(|&k| slot(&b, k) != 0)
        .map(|k| {
            let home = layout::get_u64(&b, entry(k)) as usize & (buckets - 1);
            (k, (home + buckets - 1) & (buckets - 1))
        })
        .find(|&(_, to)| slot(&b, to) == 0)
        .expect("a free bucket before some home bucket");
    let mut c = b.clone();
    let (f, t) = (entry(from), entry(to));
    let moved: Vec<u8> = c[f..f + layout::BUCKET_LEN].to_vec();
    c[t..t + layout::BUCKET_LEN].copy_from_slice(&moved);
    c[f..f + layout::BUCKET_LEN].fill(0);
    reseal(&mut c);
    let e = open_bytes(&c).unwrap_err().to_string();
    assert!(e.contains("unreachable by lookup"), "{e}");
    assert!(open_bytes(&b).is_ok());
}

#[test]
fn bad_input_is_refused() {
    let mut c = Cursor::new(Vec::new());
    let dup = vec![file("/x", b"1"), file("/x", b"2")];
    assert!(write_webroot(&mut c, "m".as_ref(), dup, &WriteOptions::default()).is_err());
    let rel = vec![file("x", b"1")];
    assert!(write_webroot(&mut c, "m".as_ref(), rel, &WriteOptions::default()).is_err());
    let dangling = vec![InputObject::Alias {
        path: b"/".to_vec(),
        target: b"/nope".to_vec(),
    }];
    assert!(write_webroot(&mut c, "m".as_ref(), dangling, &WriteOptions::default()).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip(files in proptest::collection::btree_map(
        "/[a-zA-Z0-9 %é._-]{1,12}(/[a-z0-9]{1,6}){0,3}",
        proptest::collection::vec(any::<u8>(), 0..5000),
        0..40,
    )) {
        let objs: Vec<InputObject> = files.iter().map(|(p, b)| file(p, b)).collect();
        let bytes = build(objs);
        let w = open_bytes(&bytes).unwrap();
        prop_assert_eq!(w.objects().len(), files.len());
        for (p, b) in &files {
            let o = w.lookup(p.as_bytes()).unwrap();
            prop_assert_eq!(w.body(o.identity().unwrap()).unwrap(), b.as_slice());
            prop_assert_eq!(o.identity().unwrap().body_off() % ALIGN, 0);
        }
        prop_assert!(w.verify().is_empty());
    }

    #[test]
    fn random_corruption_never_panics(
        at in 0usize..100_000,
        bit in 0u8..8,
        cut in any::<bool>(),
        sealed in any::<bool>(),
    ) {
        let mut b = sample();
        let at = at % b.len();
        if cut { b.truncate(at) } else { b[at] ^= 1 << bit }
        // Resealed: checksums no longer catch it, so the structural checks must.
        if sealed { reseal(&mut b) }
        if let Ok(w) = open_bytes(&b) {
            // Corruption that passes open is in a body or padding: verify or lookups must cope.
            let _problems = w.verify();
            for o in w.objects() {
                let _ = w.lookup(&o.path);
            }
        }
    }
}
