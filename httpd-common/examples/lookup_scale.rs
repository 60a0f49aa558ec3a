//! Lookup cost against object count: webroots of 1k to 1M index entries (aliases of one file,
//! so the file stays small), random hits and misses, nanoseconds per lookup.
//! Run: `cargo run --release -p httpd-common --example lookup_scale` (part of `cargo xtask bench`).

use std::hint::black_box;
use std::time::Instant;

use httpd_common::webroot::{
    Body, Encoding, InputObject, InputRep, Webroot, WriteOptions, write_webroot,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    println!("| objects | file MiB | open ms | hit ns/lookup | miss ns/lookup |");
    println!("|---:|---:|---:|---:|---:|");
    for n in [1_000usize, 10_000, 100_000, 1_000_000] {
        let body = b"x".to_vec();
        let mut objects = vec![InputObject::File {
            path: b"/file".to_vec(),
            mime: "text/plain".into(),
            mtime: 0,
            cache_control: None,
            reps: vec![InputRep {
                encoding: Encoding::Identity,
                len: 1,
                hash: *blake3::hash(&body).as_bytes(),
                body: Body::Bytes(body),
                sha256: None,
            }],
        }];
        let paths: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("/dir{}/page-{i}.html", i % 97).into_bytes())
            .collect();
        for p in &paths {
            objects.push(InputObject::Alias {
                path: p.clone(),
                target: b"/file".to_vec(),
            });
        }
        let path = dir.path().join(format!("{n}.webroot"));
        let mut f = std::fs::File::create(&path)?;
        write_webroot(&mut f, &path, objects, &WriteOptions::default())?;
        drop(f);
        let t = Instant::now();
        let w = Webroot::open(&path)?;
        let open_ms = t.elapsed().as_secs_f64() * 1e3;
        // Pseudo-random order, so caches see a realistic spread.
        let mut x = 0x9E37_79B9u64;
        let order: Vec<usize> = (0..1_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % n as u64) as usize
            })
            .collect();
        let t = Instant::now();
        for &i in &order {
            black_box(w.lookup(black_box(&paths[i])));
        }
        let hit = t.elapsed().as_nanos() as f64 / order.len() as f64;
        let misses: Vec<Vec<u8>> = (0..1000)
            .map(|i| format!("/nope/{i}.html").into_bytes())
            .collect();
        let t = Instant::now();
        for k in 0..1_000_000 {
            black_box(w.lookup(black_box(&misses[k % misses.len()])));
        }
        let miss = t.elapsed().as_nanos() as f64 / 1e6;
        let mib = std::fs::metadata(&path)?.len() as f64 / (1024.0 * 1024.0);
        println!("| {n} | {mib:.1} | {open_ms:.1} | {hit:.0} | {miss:.0} |");
    }
    Ok(())
}
