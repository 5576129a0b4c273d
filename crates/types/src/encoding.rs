//! The canonical binary encoding.
//!
//! Integers are fixed-width little-endian; byte strings and lists carry a `u32` length
//! prefix; enums a `u8` tag; options a `u8` 0 or 1 then the value. Decoding is strict: a
//! value must consume exactly its bytes, unknown tags and trailing bytes are errors. The
//! format is specified in `docs/encoding.md`.

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the value did.
    #[error("input ended early: needed {needed} more bytes at offset {offset}")]
    UnexpectedEnd {
        /// Byte offset where reading stopped.
        offset: usize,
        /// Bytes that were still needed.
        needed: usize,
    },
    /// An enum tag that this version does not know.
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// Which enum.
        what: &'static str,
        /// The tag read.
        tag: u8,
    },
    /// Bytes left over after a complete value.
    #[error("{count} trailing bytes after the value")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// A length prefix larger than the limit for that field.
    #[error("{what} length {len} exceeds the limit {max}")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// Length read.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A field whose bytes are not a valid value (a public key off the curve, bad UTF-8).
    #[error("invalid {what}")]
    Invalid {
        /// Which field.
        what: &'static str,
    },
}

/// A value with a canonical encoding.
pub trait Encode {
    /// Appends the canonical bytes of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// The canonical bytes of `self`.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// A value that can be read back from its canonical encoding.
pub trait Decode: Sized {
    /// Reads one value from `r`.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// Decodes a value that must span all of `bytes`.
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let value = Self::decode(&mut r)?;
        r.finish()?;
        Ok(value)
    }
}

/// A cursor over encoded bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len());
        match end {
            Some(end) => {
                let slice = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(slice)
            }
            None => Err(DecodeError::UnexpectedEnd {
                offset: self.pos,
                needed: n - (self.bytes.len() - self.pos),
            }),
        }
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads a `u32` length prefix and checks it against `max`.
    pub fn len(&mut self, what: &'static str, max: usize) -> Result<usize, DecodeError> {
        let len = u32::decode(self)? as usize;
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        Ok(len)
    }

    /// Errors unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.bytes.len() - self.pos {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }
}

macro_rules! int_codec {
    ($($t:ty),*) => {$(
        impl Encode for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
        impl Decode for $t {
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(<$t>::from_le_bytes(r.array()?))
            }
        }
    )*};
}
int_codec!(u8, u16, u32, u64, u128);

impl Encode for str {
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as u32).encode(out);
        out.extend_from_slice(self.as_bytes());
    }
}

impl Encode for String {
    fn encode(&self, out: &mut Vec<u8>) {
        self.as_str().encode(out)
    }
}

impl Decode for String {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = r.len("string", 1 << 16)?;
        let bytes = r.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Invalid {
            what: "utf-8 string",
        })
    }
}

impl<T: Encode> Encode for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.encode(out);
            }
        }
    }
}

impl<T: Decode> Decode for Option<T> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match u8::decode(r)? {
            0 => Ok(None),
            1 => Ok(Some(T::decode(r)?)),
            tag => Err(DecodeError::UnknownTag {
                what: "option",
                tag,
            }),
        }
    }
}

impl<T: Encode> Encode for [T] {
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as u32).encode(out);
        for item in self {
            item.encode(out);
        }
    }
}

impl<T: Encode> Encode for Vec<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        self.as_slice().encode(out)
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        // Each item takes at least one byte, so the remaining input bounds the count.
        let len = r.len("list", r.bytes.len() - r.pos)?;
        (0..len).map(|_| T::decode(r)).collect()
    }
}

/// Implements [`Encode`] and [`Decode`] for a struct with named fields, encoded in the order
/// listed (which must be the declaration order, for readability of the spec).
#[macro_export]
macro_rules! codec_struct {
    ($name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        impl $crate::Encode for $name {
            fn encode(&self, out: &mut Vec<u8>) {
                $( $crate::Encode::encode(&self.$field, out); )*
            }
        }
        impl $crate::Decode for $name {
            fn decode(r: &mut $crate::Reader<'_>) -> Result<Self, $crate::DecodeError> {
                Ok($name { $( $field: <$ty as $crate::Decode>::decode(r)? ),* })
            }
        }
    };
}

/// Implements [`Encode`] and [`Decode`] for an enum whose variants have named fields (or
/// none), each with an explicit `u8` tag.
#[macro_export]
macro_rules! codec_enum {
    ($name:ident, $what:literal { $($tag:literal => $variant:ident { $($field:ident : $ty:ty),* $(,)? }),* $(,)? }) => {
        impl $crate::Encode for $name {
            fn encode(&self, out: &mut Vec<u8>) {
                match self {
                    $( $name::$variant { $($field),* } => {
                        out.push($tag);
                        $( $crate::Encode::encode($field, out); )*
                    } )*
                }
            }
        }
        impl $crate::Decode for $name {
            fn decode(r: &mut $crate::Reader<'_>) -> Result<Self, $crate::DecodeError> {
                Ok(match <u8 as $crate::Decode>::decode(r)? {
                    $( $tag => $name::$variant { $( $field: <$ty as $crate::Decode>::decode(r)? ),* }, )*
                    tag => return Err($crate::DecodeError::UnknownTag { what: $what, tag }),
                })
            }
        }
    };
}

impl Encode for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl Decode for bool {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match u8::decode(r)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::UnknownTag { what: "bool", tag }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_little_endian() {
        assert_eq!(0x0102_0304u32.to_bytes(), vec![4, 3, 2, 1]);
        assert_eq!(u64::from_bytes(&7u64.to_bytes()), Ok(7));
    }

    #[test]
    fn rejects_trailing_bytes_and_short_input() {
        assert_eq!(
            u32::from_bytes(&[1, 0, 0, 0, 9]),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
        assert!(matches!(
            u64::from_bytes(&[1, 2]),
            Err(DecodeError::UnexpectedEnd {
                offset: 0,
                needed: 6
            })
        ));
    }

    #[test]
    fn rejects_list_longer_than_input() {
        let mut bytes = Vec::new();
        u32::MAX.encode(&mut bytes);
        assert!(matches!(
            Vec::<u64>::from_bytes(&bytes),
            Err(DecodeError::TooLong { .. })
        ));
    }
}
