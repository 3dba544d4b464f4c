//! `.npz` reading that checks sizes before it allocates: the entries are decompressed into
//! memory under one cap for all of them together (at most [`MAX_EXPANSION`] times the
//! file's size, and [`MAX_ENTRY_BYTES`]), so entries that share compressed data cannot
//! multiply it, and the shape each `.npy` header declares must account for exactly
//! the bytes that follow the header before any array is built. A forged shape or length is
//! a named error, never an allocation of what it claims.

use std::io::Read;

use crate::error::LoadError;

/// Largest decompressed size of all entries together relative to the whole file (deflate's
/// limit is about 1032).
pub const MAX_EXPANSION: u64 = 1100;
/// Largest decompressed size of all entries together (bytes).
pub const MAX_ENTRY_BYTES: u64 = 1 << 30;

fn corrupt(message: impl Into<String>) -> LoadError {
    LoadError::Corrupt {
        format: "npz",
        message: message.into(),
    }
}

/// The entries of an `.npz` file: `(name, npy bytes)`, each checked by [`check_npy`].
pub fn entries(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, LoadError> {
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| corrupt(e.to_string()))?;
    let cap = (bytes.len() as u64)
        .saturating_mul(MAX_EXPANSION)
        .min(MAX_ENTRY_BYTES);
    let mut left = cap;
    let mut out = Vec::with_capacity(archive.len().min(1024));
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| corrupt(e.to_string()))?;
        let name = entry.name().to_string();
        let mut data = Vec::new();
        (&mut entry)
            .take(left + 1)
            .read_to_end(&mut data)
            .map_err(|e| corrupt(format!("entry `{name}`: {e}")))?;
        if data.len() as u64 > left {
            return Err(corrupt(format!(
                "the entries decompress to more than {cap} bytes (at entry `{name}`)"
            )));
        }
        left -= data.len() as u64;
        check_npy(&name, &data)?;
        out.push((name, data));
    }
    Ok(out)
}

/// Checks that the shape and element type an `.npy` header declares account for exactly
/// the data after the header.
pub fn check_npy(name: &str, data: &[u8]) -> Result<(), LoadError> {
    let bad = |what: &str| corrupt(format!("entry `{name}`: {what}"));
    if data.len() < 10 || &data[..6] != b"\x93NUMPY" {
        return Err(bad("not an .npy array"));
    }
    let (length, start): (usize, usize) = match data[6] {
        1 => (u16::from_le_bytes([data[8], data[9]]) as usize, 10),
        2 | 3 if data.len() >= 12 => (
            u32::from_le_bytes([data[8], data[9], data[10], data[11]]) as usize,
            12,
        ),
        _ => return Err(bad("unsupported .npy version")),
    };
    let end = start
        .checked_add(length)
        .filter(|&e| e <= data.len())
        .ok_or_else(|| bad("header longer than the entry"))?;
    let header = std::str::from_utf8(&data[start..end]).map_err(|_| bad("header is not text"))?;
    // Parsed as the Python literal it is, every key decoded (`'shape'`, `"shape"` and
    // `'\x73hape'` are one key) and named once: a reader that took another occurrence than
    // this check would allocate for a shape nobody checked.
    let Header { descr, shape } = parse_header(header).map_err(|why| bad(&why))?;
    let item =
        item_size(&descr).ok_or_else(|| bad(&format!("unsupported element type `{descr}`")))?;
    let elements = shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .ok_or_else(|| bad("shape overflows"))?;
    let needed = elements
        .checked_mul(item)
        .ok_or_else(|| bad("shape overflows"))?;
    let present = (data.len() - end) as u64;
    if needed != present {
        return Err(bad(&format!(
            "the header's shape {shape:?} needs {needed} bytes of data, the entry holds {present}"
        )));
    }
    Ok(())
}

/// The size in bytes of one element, from a `descr` such as `<f8`.
fn item_size(descr: &str) -> Option<u64> {
    let digits: String = descr.chars().skip_while(|c| !c.is_ascii_digit()).collect();
    digits.parse().ok().filter(|&n| n > 0 && n <= 16)
}

/// What an `.npy` header declares.
struct Header {
    descr: String,
    shape: Vec<u64>,
}

/// Parses an `.npy` header: a Python dict literal with exactly the keys `descr` (a string),
/// `fortran_order` (`True` or `False`) and `shape` (a tuple of integers), each once, keys
/// and strings in either quote with Python's escapes.
fn parse_header(text: &str) -> Result<Header, String> {
    let mut p = Literal {
        chars: text.chars().collect(),
        at: 0,
    };
    p.expect('{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.skip_space();
        if p.eat('}') {
            break;
        }
        let key = p.string()?;
        p.expect(':')?;
        let duplicate = match key.as_str() {
            "descr" => descr.replace(p.string()?).is_some(),
            "fortran_order" => fortran.replace(p.boolean()?).is_some(),
            "shape" => shape.replace(p.tuple()?).is_some(),
            other => return Err(format!("the header has an unknown key `{other}`")),
        };
        if duplicate {
            return Err(format!("the header names `{key}` more than once"));
        }
        p.skip_space();
        if !p.eat(',') {
            p.expect('}')?;
            break;
        }
    }
    p.skip_space();
    if p.at != p.chars.len() {
        return Err("text after the header's dict".into());
    }
    match (descr, fortran, shape) {
        (Some(descr), Some(_), Some(shape)) => Ok(Header { descr, shape }),
        _ => Err("the header lacks `descr`, `fortran_order` or `shape`".into()),
    }
}

/// A cursor over a Python literal.
struct Literal {
    chars: Vec<char>,
    at: usize,
}

impl Literal {
    fn skip_space(&mut self) {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        if self.chars.get(self.at) == Some(&c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        self.skip_space();
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!(
                "unreadable header: `{c}` expected at character {}",
                self.at
            ))
        }
    }

    /// A string in single or double quotes, with Python's escapes decoded.
    fn string(&mut self) -> Result<String, String> {
        self.skip_space();
        let quote = match self.chars.get(self.at) {
            Some(&q @ ('\'' | '"')) => q,
            _ => {
                return Err(format!(
                    "unreadable header: a string expected at character {}",
                    self.at
                ))
            }
        };
        self.at += 1;
        let mut out = String::new();
        loop {
            let c = *self
                .chars
                .get(self.at)
                .ok_or("unterminated string in the header")?;
            self.at += 1;
            match c {
                c if c == quote => return Ok(out),
                '\\' => {
                    let e = *self
                        .chars
                        .get(self.at)
                        .ok_or("unterminated string in the header")?;
                    self.at += 1;
                    let hex = |p: &mut Literal, n: usize| -> Result<char, String> {
                        let digits: String = p.chars.iter().skip(p.at).take(n).collect();
                        p.at += n;
                        u32::from_str_radix(&digits, 16)
                            .ok()
                            .filter(|_| digits.len() == n)
                            .and_then(char::from_u32)
                            .ok_or_else(|| format!("a bad escape `\\{e}{digits}` in the header"))
                    };
                    out.push(match e {
                        'x' => hex(self, 2)?,
                        'u' => hex(self, 4)?,
                        'U' => hex(self, 8)?,
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '0' => '\0',
                        '\\' | '\'' | '"' => e,
                        other => {
                            return Err(format!("an unsupported escape `\\{other}` in the header"))
                        }
                    });
                }
                c => out.push(c),
            }
        }
    }

    fn boolean(&mut self) -> Result<bool, String> {
        self.skip_space();
        for (word, value) in [("True", true), ("False", false)] {
            let end = self.at + word.len();
            if end <= self.chars.len() && self.chars[self.at..end].iter().copied().eq(word.chars())
            {
                self.at = end;
                return Ok(value);
            }
        }
        Err(format!(
            "unreadable header: `True` or `False` expected at character {}",
            self.at
        ))
    }

    /// A tuple of non-negative integers: `()`, `(3,)`, `(2, 3)`.
    fn tuple(&mut self) -> Result<Vec<u64>, String> {
        self.expect('(')?;
        let mut out = Vec::new();
        loop {
            self.skip_space();
            if self.eat(')') {
                return Ok(out);
            }
            let start = self.at;
            while self.chars.get(self.at).is_some_and(|c| c.is_ascii_digit()) {
                self.at += 1;
            }
            let digits: String = self.chars[start..self.at].iter().collect();
            out.push(
                digits.parse().map_err(|_| {
                    format!("unreadable dimension at character {start} of the header")
                })?,
            );
            self.skip_space();
            if !self.eat(',') {
                self.expect(')')?;
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, data: usize) -> Vec<u8> {
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend(std::iter::repeat_n(0u8, data));
        out
    }

    #[test]
    fn shapes_must_match_the_data() {
        let h = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }";
        check_npy("a", &npy(h, 48)).unwrap();
        assert!(check_npy("a", &npy(h, 40)).is_err());
        let huge = "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999,), }";
        let err = check_npy("a", &npy(huge, 48)).unwrap_err().to_string();
        assert!(err.contains("799999999992 bytes"), "{err}");
        let overflow =
            "{'descr': '<f8', 'fortran_order': False, 'shape': (18446744073709551615, 4), }";
        assert!(check_npy("a", &npy(overflow, 0)).is_err());
        let scalar = "{'descr': '<i8', 'fortran_order': False, 'shape': (), }";
        check_npy("a", &npy(scalar, 8)).unwrap();
        assert!(check_npy("a", b"\x93NUMPY\x01\x00\xff\xff").is_err());
        // A second `shape` (the one a reader may take) is refused whatever it says.
        let twice =
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), 'shape': (99999999999,), }";
        let err = check_npy("a", &npy(twice, 48)).unwrap_err().to_string();
        assert!(err.contains("more than once"), "{err}");
        // Also in another quoting or spelled with an escape (NumPy's reader decodes both).
        for second in ["\"shape\"", "'\\x73hape'", "'sh\\u0061pe'"] {
            let twice = format!(
                "{{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), {second}: (99999999999,), }}"
            );
            let err = check_npy("a", &npy(&twice, 48)).unwrap_err().to_string();
            assert!(err.contains("more than once"), "{second}: {err}");
        }
        // Double quotes and no trailing comma are fine; unknown keys and junk are not.
        let other = "{\"descr\": \"<f8\", \"fortran_order\": False, \"shape\": (2, 3)}";
        check_npy("a", &npy(other, 48)).unwrap();
        for bad in [
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), 'extra': 1}",
            "{'descr': '<f8', 'fortran_order': False}",
            "{'descr': '<f8', 'fortran_order': Maybe, 'shape': (2, 3)}",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, -3)}",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3)} x",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), 'sh",
        ] {
            assert!(check_npy("a", &npy(bad, 48)).is_err(), "{bad}");
        }
    }

    /// An archive whose central directory lists `copies` entries (names `a0.npy`, `a1.npy`,
    /// …) that all point at one deflated entry of `zeros` bytes of `.npy` data.
    fn shared_entries(zeros: usize, copies: usize) -> Vec<u8> {
        use std::io::Write;
        let header = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({zeros},), }}");
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        writer.start_file("a0.npy", options).unwrap();
        writer.write_all(&npy(&header, zeros)).unwrap();
        let bytes = writer.finish().unwrap().into_inner();
        // Split at the central directory (one record) and its end record.
        let find = |sig: &[u8]| bytes.windows(4).rposition(|w| w == sig).unwrap();
        let (central, end) = (find(b"PK\x01\x02"), find(b"PK\x05\x06"));
        let record = &bytes[central..end];
        let mut out = bytes[..central].to_vec();
        for i in 0..copies {
            let mut copy = record.to_vec();
            // The name starts 46 bytes in; replace its digit (same length: `a0.npy`).
            copy[47] = b'0' + (i % 10) as u8;
            copy[46] = b'a' + (i / 10) as u8;
            out.extend_from_slice(&copy);
        }
        let directory = (record.len() * copies) as u32;
        let mut eocd = bytes[end..].to_vec();
        eocd[8..10].copy_from_slice(&(copies as u16).to_le_bytes());
        eocd[10..12].copy_from_slice(&(copies as u16).to_le_bytes());
        eocd[12..16].copy_from_slice(&directory.to_le_bytes());
        out.extend_from_slice(&eocd);
        out
    }

    #[test]
    fn entries_sharing_compressed_data_cannot_multiply_it() {
        // One entry of 4 MB of zeros reads (deflate's ratio is below the cap)...
        let one = shared_entries(4 << 20, 1);
        assert_eq!(entries(&one).unwrap().len(), 1);
        // ...but 40 directory entries pointing at it would make 160 MB from a file of a few
        // kB: refused once their total passes the cap.
        let many = shared_entries(4 << 20, 40);
        let err = entries(&many).unwrap_err().to_string();
        assert!(err.contains("decompress to more than"), "{err}");
    }
}
