//! A reader of the protobuf wire format, for the part of ONNX's schema (`onnx.proto`) the
//! importer needs: the graph's nodes, initializers, inputs and their shapes. Every length is
//! checked against the bytes left before anything is allocated; unknown fields are skipped.

use super::OnnxError;

/// One field of a message: its number and value.
#[derive(Clone, Copy, Debug)]
pub(super) enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// The fields of one message, in order.
pub(super) struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Fields<'a> {
        Fields { bytes, at: 0 }
    }

    fn varint(&mut self) -> Result<u64, OnnxError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.at)
                .ok_or_else(|| broken("a varint runs past the end"))?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(broken("a varint is longer than 10 bytes"))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], OnnxError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| broken("a field runs past the end of its message"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    /// The next field, or `None` at the end of the message.
    pub(super) fn next_field(&mut self) -> Result<Option<(u32, Field<'a>)>, OnnxError> {
        if self.at == self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| broken("a field number is too large"))?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            )),
            2 => {
                let len =
                    usize::try_from(self.varint()?).map_err(|_| broken("a length is too large"))?;
                Field::Bytes(self.take(len)?)
            }
            5 => Field::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            )),
            other => return Err(broken(&format!("unknown wire type {other}"))),
        };
        Ok(Some((number, field)))
    }
}

fn broken(what: &str) -> OnnxError {
    OnnxError::Malformed(what.to_string())
}

/// Calls `each(number, field)` for every field of `bytes`.
pub(super) fn for_each<'a>(
    bytes: &'a [u8],
    mut each: impl FnMut(u32, Field<'a>) -> Result<(), OnnxError>,
) -> Result<(), OnnxError> {
    let mut fields = Fields::new(bytes);
    while let Some((number, field)) = fields.next_field()? {
        each(number, field)?;
    }
    Ok(())
}

/// A string field.
pub(super) fn string(field: Field<'_>) -> Result<String, OnnxError> {
    match field {
        Field::Bytes(b) => String::from_utf8(b.to_vec()).map_err(|_| broken("a name is not UTF-8")),
        _ => Err(broken("a string field has another wire type")),
    }
}

/// Appends the integers of a repeated integer field, packed or not.
pub(super) fn push_ints(field: Field<'_>, out: &mut Vec<i64>) -> Result<(), OnnxError> {
    match field {
        Field::Varint(v) => out.push(v as i64),
        Field::Bytes(b) => {
            let mut packed = Fields::new(b);
            while packed.at < b.len() {
                out.push(packed.varint()? as i64);
            }
        }
        _ => return Err(broken("an integer field has another wire type")),
    }
    Ok(())
}

/// Appends the floats of a repeated float field, packed or not.
pub(super) fn push_floats(field: Field<'_>, out: &mut Vec<f64>) -> Result<(), OnnxError> {
    match field {
        Field::Fixed32(v) => out.push(f64::from(f32::from_bits(v))),
        Field::Bytes(b) if b.len() % 4 == 0 => out.extend(
            b.chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes(c.try_into().expect("4 bytes")))),
        ),
        _ => return Err(broken("a float field has another wire type or length")),
    }
    Ok(())
}

/// Appends the doubles of a repeated double field, packed or not.
pub(super) fn push_doubles(field: Field<'_>, out: &mut Vec<f64>) -> Result<(), OnnxError> {
    match field {
        Field::Fixed64(v) => out.push(f64::from_bits(v)),
        Field::Bytes(b) if b.len() % 8 == 0 => out.extend(
            b.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))),
        ),
        _ => return Err(broken("a double field has another wire type or length")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_lengths_are_checked() {
        // Field 1, varint 300; field 2, bytes "ab".
        let ok = [0x08, 0xac, 0x02, 0x12, 0x02, b'a', b'b'];
        let mut seen = Vec::new();
        for_each(&ok, |n, f| {
            seen.push((n, format!("{f:?}")));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen[0], (1, "Varint(300)".to_string()));
        assert_eq!(seen[1].0, 2);
        // A length past the end, a varint that never ends, an unknown wire type.
        for bad in [&[0x12, 0x05, b'a'][..], &[0x08, 0xff, 0xff], &[0x0b]] {
            assert!(matches!(
                for_each(bad, |_, _| Ok(())),
                Err(OnnxError::Malformed(_))
            ));
        }
        let mut ints = Vec::new();
        push_ints(Field::Bytes(&[0x01, 0xac, 0x02]), &mut ints).unwrap();
        assert_eq!(ints, vec![1, 300]);
    }
}
