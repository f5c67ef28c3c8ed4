//! The protobuf wire format: field keys, varints, fixed-width values and length-delimited
//! bytes, read from a borrowed buffer without knowing any schema.

/// One field as it appears on the wire, its payload not yet interpreted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum WireValue<'a> {
    /// Wire type 0: int32, int64, bool, enum.
    Varint(u64),
    /// Wire type 1: double, fixed64.
    Fixed64(u64),
    /// Wire type 2: string, bytes, nested message, map entry, packed repeated scalars.
    Len(&'a [u8]),
    /// Wire type 5: float, fixed32.
    Fixed32(u32),
}

impl WireValue<'_> {
    /// The wire type's name, for "expected …, found …" errors.
    pub(super) fn wire_name(&self) -> &'static str {
        match self {
            WireValue::Varint(_) => "varint",
            WireValue::Fixed64(_) => "fixed64",
            WireValue::Len(_) => "length-delimited",
            WireValue::Fixed32(_) => "fixed32",
        }
    }
}

/// Why a field could not be read; the caller adds which message and field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WireError {
    /// The buffer ended inside a key or a value.
    Truncated,
    /// A varint ran past 10 bytes.
    VarintTooLong,
    /// Wire types 3 and 4 (groups, unused by Kubernetes) and 6, 7 (undefined).
    UnsupportedWireType(u8),
    /// Field number 0 or above 2^29 - 1.
    BadFieldNumber(u64),
}

/// A failed read: the error, and the field number when the key itself was readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FieldError {
    /// The field whose value failed, or `None` when its key failed.
    pub(super) tag: Option<u32>,
    /// What went wrong.
    pub(super) error: WireError,
}

/// Reads fields one after another from the bytes of one message.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
}

const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;

impl<'a> Reader<'a> {
    /// A reader over the encoded fields of one message.
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// The next field number and value, or `None` at the end of the message.
    pub(super) fn field(&mut self) -> Result<Option<(u32, WireValue<'a>)>, FieldError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self
            .varint()
            .map_err(|error| FieldError { tag: None, error })?;
        let number = key >> 3;
        let tag = match u32::try_from(number) {
            Ok(tag) if number != 0 && number <= MAX_FIELD_NUMBER => tag,
            _ => {
                let error = WireError::BadFieldNumber(number);
                return Err(FieldError { tag: None, error });
            }
        };
        let value = self.value(key as u8 & 7).map_err(|error| FieldError {
            tag: Some(tag),
            error,
        })?;
        Ok(Some((tag, value)))
    }

    /// Reads a varint, as used for keys, lengths and packed numbers.
    pub(super) fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for (i, byte) in self.buf.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(if self.buf.len() >= 10 {
            WireError::VarintTooLong
        } else {
            WireError::Truncated
        })
    }

    /// Reads 8 little-endian bytes, as packed doubles are laid out.
    pub(super) fn fixed64(&mut self) -> Result<u64, WireError> {
        self.take(8).map(|b| u64::from_le_bytes(le_bytes(b)))
    }

    /// Whether every byte has been read.
    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn value(&mut self, wire_type: u8) -> Result<WireValue<'a>, WireError> {
        match wire_type {
            0 => self.varint().map(WireValue::Varint),
            1 => self.fixed64().map(WireValue::Fixed64),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| WireError::Truncated)?;
                self.take(len).map(WireValue::Len)
            }
            5 => self
                .take(4)
                .map(|b| WireValue::Fixed32(u32::from_le_bytes(le_bytes(b)))),
            other => Err(WireError::UnsupportedWireType(other)),
        }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < len {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.buf.split_at(len);
        self.buf = tail;
        Ok(head)
    }
}

/// Copies exactly `N` bytes; `take(N)` guarantees the length.
fn le_bytes<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}
