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
    // Each key once: a reader that takes another occurrence than this check would allocate
    // for a shape nobody checked.
    for key in ["'descr'", "'fortran_order'", "'shape'"] {
        if header.matches(key).count() > 1 {
            return Err(bad(&format!("the header names {key} more than once")));
        }
    }
    let item = item_size(header).ok_or_else(|| bad("unreadable `descr` in the header"))?;
    let shape = shape(header).ok_or_else(|| bad("unreadable `shape` in the header"))?;
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

/// The size in bytes of one element, from `'descr': '<f8'` and the like.
fn item_size(header: &str) -> Option<u64> {
    let rest = &header[header.find("'descr'")? + 7..];
    let rest = &rest[rest.find('\'')? + 1..];
    let descr = &rest[..rest.find('\'')?];
    let digits: String = descr.chars().skip_while(|c| !c.is_ascii_digit()).collect();
    digits.parse().ok().filter(|&n| n > 0 && n <= 16)
}

/// The dimensions of `'shape': (a, b, )`.
fn shape(header: &str) -> Option<Vec<u64>> {
    let rest = &header[header.find("'shape'")? + 7..];
    let open = rest.find('(')?;
    let close = rest.find(')')?;
    if close < open {
        return None;
    }
    rest[open + 1..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect()
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
