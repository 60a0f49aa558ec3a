//! Incremental, strict chunked transfer-coding (RFC 9112 section 7.1). The decoder validates
//! framing byte by byte; the caller forwards the consumed bytes unchanged (so the next hop sees
//! exactly the framing we checked) or takes the data out to de-chunk.

/// Longest chunk-size line (size, extensions, CRLF).
const MAX_SIZE_LINE: usize = 4096;
/// Largest trailer section.
const MAX_TRAILERS: usize = 32 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size")]
    Size,
    #[error("invalid chunk extension")]
    Extension,
    #[error("missing CRLF after chunk data")]
    DataEnd,
    #[error("invalid trailer field")]
    Trailer,
    #[error("chunk framing too long")]
    TooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// Reading hex digits; `any` once at least one was read.
    Size {
        any: bool,
    },
    /// In chunk extensions (after `;`), until CR.
    Ext {
        quoted: bool,
        escape: bool,
    },
    /// Expecting LF after the size line's CR.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line; `colon` once the name ended.
    TrailerLine {
        colon: bool,
        name_len: usize,
    },
    TrailerLf {
        last: bool,
    },
    Done,
}

#[derive(Debug, Clone)]
pub struct Decoder {
    st: St,
    size: u64,
    line: usize,
    trailers: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            st: St::Size { any: false },
            size: 0,
            line: 0,
            trailers: 0,
        }
    }
}

fn tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

impl Decoder {
    pub fn is_done(&self) -> bool {
        self.st == St::Done
    }

    /// Consumes a prefix of `input`. Returns how many bytes were consumed (all of them unless
    /// the message ended inside `input`). Chunk data is appended to `data` when given.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut data: Option<&mut Vec<u8>>,
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let c = input[i];
            match self.st {
                St::Done => return Ok(i),
                St::Data => {
                    let n = (self.size.min((input.len() - i) as u64)) as usize;
                    if let Some(d) = data.as_deref_mut() {
                        d.extend_from_slice(&input[i..i + n]);
                    }
                    self.size -= n as u64;
                    i += n;
                    if self.size == 0 {
                        self.st = St::DataCr;
                    }
                    continue;
                }
                St::Size { any } => {
                    self.line += 1;
                    if let Some(v) = (c as char).to_digit(16) {
                        if self.size >> 60 != 0 {
                            return Err(ChunkError::Size); // overflow
                        }
                        self.size = self.size << 4 | u64::from(v);
                        self.st = St::Size { any: true };
                    } else if !any {
                        return Err(ChunkError::Size);
                    } else if c == b';' {
                        self.st = St::Ext {
                            quoted: false,
                            escape: false,
                        };
                    } else if c == b'\r' {
                        self.st = St::SizeLf;
                    } else {
                        // Whitespace, signs, "0x", underscores: all refused.
                        return Err(ChunkError::Size);
                    }
                }
                St::Ext { quoted, escape } => {
                    self.line += 1;
                    if (c < 0x20 && c != b'\t' && c != b'\r') || c == 0x7f {
                        return Err(ChunkError::Extension);
                    }
                    if quoted && c == b'\r' {
                        // A bare CR is never valid, escaped or not (RFC 9112 section 2.2).
                        return Err(ChunkError::Extension);
                    }
                    self.st = if quoted {
                        if escape {
                            St::Ext {
                                quoted,
                                escape: false,
                            }
                        } else if c == b'\\' {
                            St::Ext {
                                quoted,
                                escape: true,
                            }
                        } else if c == b'"' {
                            St::Ext {
                                quoted: false,
                                escape: false,
                            }
                        } else if c == b'\r' {
                            return Err(ChunkError::Extension);
                        } else {
                            self.st
                        }
                    } else if c == b'"' {
                        St::Ext {
                            quoted: true,
                            escape: false,
                        }
                    } else if c == b'\r' {
                        St::SizeLf
                    } else {
                        self.st
                    };
                }
                St::SizeLf => {
                    if c != b'\n' {
                        return Err(ChunkError::Size);
                    }
                    self.line = 0;
                    self.st = if self.size == 0 {
                        St::TrailerStart
                    } else {
                        St::Data
                    };
                }
                St::DataCr => {
                    if c != b'\r' {
                        return Err(ChunkError::DataEnd);
                    }
                    self.st = St::DataLf;
                }
                St::DataLf => {
                    if c != b'\n' {
                        return Err(ChunkError::DataEnd);
                    }
                    self.st = St::Size { any: false };
                }
                St::TrailerStart => {
                    self.trailers += 1;
                    if c == b'\r' {
                        self.st = St::TrailerLf { last: true };
                    } else if tchar(c) {
                        self.st = St::TrailerLine {
                            colon: false,
                            name_len: 1,
                        };
                    } else {
                        return Err(ChunkError::Trailer);
                    }
                }
                St::TrailerLine { colon, name_len } => {
                    self.trailers += 1;
                    if !colon {
                        if c == b':' && name_len > 0 {
                            self.st = St::TrailerLine {
                                colon: true,
                                name_len,
                            };
                        } else if tchar(c) {
                            self.st = St::TrailerLine {
                                colon,
                                name_len: name_len + 1,
                            };
                        } else {
                            return Err(ChunkError::Trailer);
                        }
                    } else if c == b'\r' {
                        self.st = St::TrailerLf { last: false };
                    } else if (c < 0x20 && c != b'\t') || c == 0x7f {
                        return Err(ChunkError::Trailer);
                    }
                }
                St::TrailerLf { last } => {
                    self.trailers += 1;
                    if c != b'\n' {
                        return Err(ChunkError::Trailer);
                    }
                    if last {
                        self.st = St::Done;
                        return Ok(i + 1);
                    }
                    self.st = St::TrailerStart;
                }
            }
            if self.line > MAX_SIZE_LINE || self.trailers > MAX_TRAILERS {
                return Err(ChunkError::TooLong);
            }
            i += 1;
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(s: &[u8]) -> Result<(usize, bool, Vec<u8>), ChunkError> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        let n = d.feed(s, Some(&mut out))?;
        Ok((n, d.is_done(), out))
    }

    #[test]
    fn valid() {
        let (n, done, out) =
            decode(b"5\r\nhello\r\n6;ext=\"a;b\"\r\n world\r\n0\r\n\r\nNEXT").unwrap();
        assert!(done);
        assert_eq!(out, b"hello world");
        assert_eq!(
            n,
            b"5\r\nhello\r\n6;ext=\"a;b\"\r\n world\r\n0\r\n\r\n".len()
        );
        let (_, done, _) = decode(b"A\r\n0123456789\r\n0\r\nX-Sum: 1\r\nY: z\r\n\r\n").unwrap();
        assert!(done);
        let (_, done, _) = decode(b"5\r\nhel").unwrap();
        assert!(!done);
    }

    #[test]
    fn invalid() {
        for bad in [
            &b"-5\r\nhello\r\n"[..],
            b"+5\r\nhello\r\n",
            b"0x5\r\nhello\r\n",
            b"5_0\r\n",
            b" 5\r\n",
            b"5 \r\n",
            b"\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloXY",
            b"5\r\nhello\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"5;a\x00b\r\n",
            b"1;a=\"\\\r\"\r\nx\r\n0\r\n\r\n",
            b"0\r\nBad Trailer\r\n\r\n",
            b"0\r\nX: a\nb\r\n\r\n",
            b"0\r\n\n",
        ] {
            assert!(
                decode(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_result(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..50), 0..6), split in 0usize..400) {
            let mut wire = Vec::new();
            let mut want = Vec::new();
            for c in &chunks {
                wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                wire.extend_from_slice(c);
                wire.extend_from_slice(b"\r\n");
                want.extend_from_slice(c);
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let split = split.min(wire.len());
            let mut d = Decoder::default();
            let mut out = Vec::new();
            let a = d.feed(&wire[..split], Some(&mut out)).unwrap();
            prop_assert_eq!(a, split);
            let b = d.feed(&wire[split..], Some(&mut out)).unwrap();
            prop_assert_eq!(a + b, wire.len());
            prop_assert!(d.is_done());
            prop_assert_eq!(out, want);
        }

        #[test]
        fn never_panics(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Decoder::default().feed(&input, None);
        }
    }
}
