//! Choosing a Content-Type: `--mime-types` overrides, then the web extension table, then
//! libmagic on the content.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};

/// Extensions libmagic cannot tell or gets wrong for the web (it calls CSS and JS `text/plain`,
/// SVG `image/svg`, JSON `application/json` only sometimes, WOFF2 `application/octet-stream`).
const WEB_TYPES: &[(&str, &str)] = &[
    ("html", "text/html"),
    ("htm", "text/html"),
    ("css", "text/css"),
    ("js", "text/javascript"),
    ("mjs", "text/javascript"),
    ("cjs", "text/javascript"),
    ("json", "application/json"),
    ("map", "application/json"),
    ("webmanifest", "application/manifest+json"),
    ("xml", "application/xml"),
    ("rss", "application/rss+xml"),
    ("atom", "application/atom+xml"),
    ("svg", "image/svg+xml"),
    ("wasm", "application/wasm"),
    ("woff", "font/woff"),
    ("woff2", "font/woff2"),
    ("ttf", "font/ttf"),
    ("otf", "font/otf"),
    ("eot", "application/vnd.ms-fontobject"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("avif", "image/avif"),
    ("ico", "image/x-icon"),
    ("bmp", "image/bmp"),
    ("mp4", "video/mp4"),
    ("m4v", "video/mp4"),
    ("webm", "video/webm"),
    ("ogv", "video/ogg"),
    ("mp3", "audio/mpeg"),
    ("m4a", "audio/mp4"),
    ("ogg", "audio/ogg"),
    ("oga", "audio/ogg"),
    ("opus", "audio/ogg"),
    ("wav", "audio/wav"),
    ("flac", "audio/flac"),
    ("txt", "text/plain"),
    ("md", "text/markdown"),
    ("csv", "text/csv"),
    ("ics", "text/calendar"),
    ("vtt", "text/vtt"),
    ("pdf", "application/pdf"),
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("tar", "application/x-tar"),
    ("br", "application/x-brotli"),
    ("zst", "application/zstd"),
];

/// Types whose content is already compressed: no variant is tried.
pub fn is_precompressed(mime: &str) -> bool {
    let base = mime.split(';').next().unwrap_or(mime).trim();
    (base.starts_with("image/") && base != "image/svg+xml" && base != "image/bmp")
        || base.starts_with("video/")
        || (base.starts_with("audio/") && base != "audio/wav")
        || matches!(
            base,
            "font/woff"
                | "font/woff2"
                | "application/zip"
                | "application/gzip"
                | "application/x-brotli"
                | "application/zstd"
                | "application/x-xz"
                | "application/x-bzip2"
                | "application/x-7z-compressed"
                | "application/pdf"
        )
}

/// Whether text of this type gets `; charset=utf-8` when its bytes are valid UTF-8.
fn wants_charset(mime: &str) -> bool {
    mime.starts_with("text/") || mime == "application/javascript"
}

/// Parses a file in /etc/mime.types format: `type ext1 ext2 ...`, `#` comments.
pub fn parse_mime_types(path: &Path) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read MIME types file", path.display()))?;
    let mut map = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(ty) = words.next() else { continue };
        if !ty.contains('/') || ty.bytes().any(|c| c.is_ascii_control()) {
            anyhow::bail!("{}:{}: not a MIME type: {ty:?}", path.display(), n + 1);
        }
        for ext in words {
            map.insert(ext.to_ascii_lowercase(), ty.to_string());
        }
    }
    Ok(map)
}

thread_local! {
    static COOKIE: RefCell<Option<magic::Cookie<magic::cookie::Load>>> = const { RefCell::new(None) };
}

fn libmagic(content: &[u8]) -> Result<String> {
    COOKIE.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            let cookie = magic::Cookie::open(magic::cookie::Flags::MIME_TYPE)
                .map_err(|e| anyhow::anyhow!("libmagic: {e}"))?
                .load(&Default::default())
                .map_err(|e| anyhow::anyhow!("libmagic database: {e}"))?;
            *c = Some(cookie);
        }
        let cookie = c.as_ref().context("libmagic cookie")?;
        // The first 64 KiB are what libmagic looks at anyway.
        let head = &content[..content.len().min(64 * 1024)];
        cookie
            .buffer(head)
            .map_err(|e| anyhow::anyhow!("libmagic: {e}"))
    })
}

/// The Content-Type of a file named `name` with this content.
pub fn detect(name: &Path, content: &[u8], overrides: &HashMap<String, String>) -> Result<String> {
    let ext = name
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    let from_ext = ext.as_deref().and_then(|e| {
        overrides.get(e).cloned().or_else(|| {
            WEB_TYPES
                .iter()
                .find(|(x, _)| *x == e)
                .map(|(_, t)| t.to_string())
        })
    });
    let mut mime = match from_ext {
        Some(t) => t,
        None if content.is_empty() => "application/octet-stream".to_string(),
        None => {
            let t = libmagic(content)?;
            match t.as_str() {
                "text/x-empty" | "application/x-empty" => "application/octet-stream".into(),
                _ => t,
            }
        }
    };
    if wants_charset(&mime) && !mime.contains("charset") && std::str::from_utf8(content).is_ok() {
        mime.push_str("; charset=utf-8");
    }
    Ok(mime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_then_magic() {
        let none = HashMap::new();
        let d = |n: &str, c: &[u8]| detect(Path::new(n), c, &none).unwrap();
        assert_eq!(d("a.css", b"body{}"), "text/css; charset=utf-8");
        assert_eq!(d("a.JS", b"x=1"), "text/javascript; charset=utf-8");
        assert_eq!(d("f.woff2", b"wOF2...."), "font/woff2");
        assert_eq!(
            d(
                "x",
                b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0"
            ),
            "image/png"
        );
        assert_eq!(d("notes", b"plain words\n"), "text/plain; charset=utf-8");
        assert_eq!(d("latin1.txt", b"caf\xe9"), "text/plain");
    }

    #[test]
    fn overrides_win() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mime.types");
        std::fs::write(&p, "# comment\ntext/x-special css foo\n").unwrap();
        let o = parse_mime_types(&p).unwrap();
        assert_eq!(
            detect(Path::new("a.css"), b"x", &o).unwrap(),
            "text/x-special; charset=utf-8"
        );
        assert_eq!(
            detect(Path::new("a.FOO"), b"x", &o).unwrap(),
            "text/x-special; charset=utf-8"
        );
    }
}
