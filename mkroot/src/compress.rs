//! Precompressed variants. Deterministic: the same input and level give the same bytes.

use std::io::Write;

use anyhow::Result;
use httpd_common::webroot::Encoding;

/// A variant is kept only when it saves at least this share of the original size.
pub const MIN_SAVING: f64 = 0.10;
/// Files above this size get faster (lower) levels: the best levels cost seconds per MiB.
const LARGE: usize = 1 << 20;

fn gzip(data: &[u8], large: bool) -> Result<Vec<u8>> {
    let level = if large { 6 } else { 9 };
    let mut e = flate2::GzBuilder::new().mtime(0).write(
        Vec::with_capacity(data.len() / 2),
        flate2::Compression::new(level),
    );
    e.write_all(data)?;
    Ok(e.finish()?)
}

fn brotli(data: &[u8], large: bool) -> Result<Vec<u8>> {
    // A window no larger than the input: small files need no 4 MiB tables.
    let lgwin = (usize::BITS - data.len().max(1).leading_zeros()).clamp(10, 22) as i32;
    let params = brotli::enc::BrotliEncoderParams {
        quality: if large { 5 } else { 9 },
        lgwin,
        size_hint: data.len(),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(data.len() / 2);
    brotli::BrotliCompress(&mut &data[..], &mut out, &params)?;
    Ok(out)
}

thread_local! {
    /// One compressor per thread and level: a zstd context at level 15 costs megabytes to set
    /// up, far more than compressing a small file.
    static ZSTD: std::cell::RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn zstd(data: &[u8], large: bool) -> Result<Vec<u8>> {
    let level = if large { 6 } else { 15 };
    ZSTD.with(|c| {
        let mut c = c.borrow_mut();
        if !c.iter().any(|(l, _)| *l == level) {
            c.push((level, zstd::bulk::Compressor::new(level)?));
        }
        let (_, comp) = c
            .iter_mut()
            .find(|(l, _)| *l == level)
            .ok_or_else(|| anyhow::anyhow!("zstd compressor"))?;
        Ok(comp.compress(data)?)
    })
}

/// Below this size a variant cannot save enough to matter (headers outweigh it).
const TINY: usize = 128;

/// The variants of `data` worth keeping, in encoding order.
pub fn variants(data: &[u8]) -> Result<Vec<(Encoding, Vec<u8>)>> {
    let large = data.len() > LARGE;
    let limit = (data.len() as f64 * (1.0 - MIN_SAVING)) as usize;
    if data.len() < TINY {
        return Ok(Vec::new());
    }
    // A fast probe: data that zstd's quickest level cannot shrink by 10% is not worth the
    // slow levels (random or already-compressed bytes of unknown type).
    let probe = &data[..data.len().min(256 * 1024)];
    let probe_limit = (probe.len() as f64 * (1.0 - MIN_SAVING)) as usize;
    if zstd::bulk::compress(probe, 1)?.len() > probe_limit {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for enc in [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd] {
        let v = match enc {
            Encoding::Gzip => gzip(data, large)?,
            Encoding::Brotli => brotli(data, large)?,
            _ => zstd(data, large)?,
        };
        if v.len() <= limit {
            out.push((enc, v));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn variants_round_trip_and_threshold() {
        let text = "hello web ".repeat(500);
        let v = variants(text.as_bytes()).unwrap();
        assert_eq!(v.len(), 3);
        let mut back = String::new();
        flate2::read::GzDecoder::new(&v[0].1[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, text);
        let mut back = Vec::new();
        brotli::BrotliDecompress(&mut &v[1].1[..], &mut back).unwrap();
        assert_eq!(back, text.as_bytes());
        assert_eq!(
            zstd::bulk::decompress(&v[2].1, text.len()).unwrap(),
            text.as_bytes()
        );
        assert_eq!(variants(text.as_bytes()).unwrap(), v, "deterministic");
        // Incompressible data keeps no variant.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        assert!(variants(&noise).unwrap().is_empty());
    }
}
