//! The hand-written reader of Avro binary encoding used by the fast path.
//!
//! Every read checks the remaining bytes before it trusts a length or a count, so a corrupt
//! length can neither read out of bounds nor make anything allocate: strings are borrowed from
//! the payload and copied into the record's arena only after they were bounds-checked and
//! validated as UTF-8, and a map's block count must not exceed the bytes that remain (each entry
//! takes at least one byte).

use crate::{DecodeError, Position, Problem};

/// A failed read: what and where (byte offset in the payload).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fail(pub(crate) Problem, pub(crate) usize);

/// A read position in one payload. Offsets are from the start of the payload, framing included.
#[derive(Debug)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8], pos: usize) -> Self {
        Self { buf, pos }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// A zigzag-encoded `long` (or `int`).
    #[inline]
    pub(crate) fn long(&mut self) -> Result<i64, Fail> {
        let start = self.pos;
        let mut v: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(Fail(Problem::Truncated, start));
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(Fail(Problem::BadVarint, start));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// A little-endian IEEE 754 `double`.
    #[inline]
    pub(crate) fn double(&mut self) -> Result<f64, Fail> {
        let start = self.pos;
        match self.buf.get(start..start + 8) {
            Some(b) => {
                self.pos += 8;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Ok(f64::from_le_bytes(a))
            }
            None => Err(Fail(Problem::Truncated, start)),
        }
    }

    /// A `string`: a length, then that many bytes of UTF-8, borrowed from the payload.
    #[inline]
    pub(crate) fn str(&mut self) -> Result<&'a str, Fail> {
        let start = self.pos;
        let len = self.long()?;
        if len < 0 || len as u64 > self.remaining() as u64 {
            return Err(Fail(Problem::BadLength, start));
        }
        let from = self.pos;
        let to = from + len as usize;
        let bytes = self.buf.get(from..to).ok_or(Fail(Problem::BadLength, start))?;
        self.pos = to;
        std::str::from_utf8(bytes).map_err(|_| Fail(Problem::InvalidUtf8, from))
    }

    /// A union branch index, which must be below `branches`.
    #[inline]
    pub(crate) fn branch(&mut self, branches: i64) -> Result<i64, Fail> {
        let start = self.pos;
        let i = self.long()?;
        if (0..branches).contains(&i) { Ok(i) } else { Err(Fail(Problem::BadUnionIndex, start)) }
    }

    /// `["null", T]`: `None` for branch 0, `read` for branch 1.
    #[inline]
    pub(crate) fn nullable<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, Fail>,
    ) -> Result<Option<T>, Fail> {
        match self.branch(2)? {
            0 => Ok(None),
            _ => read(self).map(Some),
        }
    }

    /// A `map`: blocks of entries until a zero count. A negative count `-n` means `n` entries
    /// preceded by the block's byte size. `entry` reads one value after its key.
    #[inline]
    pub(crate) fn map(
        &mut self,
        mut entry: impl FnMut(&mut Self, &'a str) -> Result<(), Fail>,
    ) -> Result<(), Fail> {
        loop {
            let start = self.pos;
            let mut n = self.long()?;
            if n == 0 {
                return Ok(());
            }
            if n < 0 {
                n = n.checked_neg().ok_or(Fail(Problem::BadLength, start))?;
                let size_at = self.pos;
                let size = self.long()?;
                if size < 0 || size as u64 > self.remaining() as u64 {
                    return Err(Fail(Problem::BadLength, size_at));
                }
            }
            if n as u64 > self.remaining() as u64 {
                return Err(Fail(Problem::BadLength, start));
            }
            for _ in 0..n {
                let key = self.str()?;
                entry(self, key)?;
            }
        }
    }
}

/// Runs one field's read, turning a [`Fail`] into a [`DecodeError::Field`] naming the field.
#[inline]
pub(crate) fn field<'a, T>(
    c: &mut Cursor<'a>,
    name: &'static str,
    read: impl FnOnce(&mut Cursor<'a>) -> Result<T, Fail>,
) -> Result<T, DecodeError> {
    read(c).map_err(|Fail(p, at)| DecodeError::field(name, p, Position::Byte(at)))
}

/// A string read that must not be empty.
#[inline]
pub(crate) fn non_empty<'a>(c: &mut Cursor<'a>) -> Result<&'a str, Fail> {
    let at = c.pos();
    let s = c.str()?;
    crate::check::non_empty(s).map_err(|p| Fail(p, at))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn zz(v: i64) -> Vec<u8> {
        let mut n = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0, -1, 1, 63, -64, 64, i64::MAX, i64::MIN, 1_779_089_412_345] {
            let b = zz(v);
            assert_eq!(Cursor::new(&b, 0).long().unwrap(), v, "{v}");
        }
    }

    #[test]
    fn overlong_varints_are_rejected() {
        let b = [0xff; 11];
        assert!(matches!(Cursor::new(&b, 0).long(), Err(Fail(Problem::BadVarint, 0))));
        let b = [0x80];
        assert!(matches!(Cursor::new(&b, 0).long(), Err(Fail(Problem::Truncated, 0))));
    }

    #[test]
    fn string_lengths_are_checked_before_use() {
        let mut b = zz(1 << 40);
        b.extend_from_slice(b"abc");
        assert!(matches!(Cursor::new(&b, 0).str(), Err(Fail(Problem::BadLength, 0))));
        let mut b = zz(-1);
        b.push(b'a');
        assert!(matches!(Cursor::new(&b, 0).str(), Err(Fail(Problem::BadLength, 0))));
        let mut b = zz(2);
        b.extend_from_slice(&[0xff, 0xfe]);
        assert!(matches!(Cursor::new(&b, 0).str(), Err(Fail(Problem::InvalidUtf8, 1))));
    }

    #[test]
    fn maps_accept_negative_block_counts_with_sizes() {
        // block 1: -2 entries, 8 bytes ; block 2: 1 entry ; end
        let mut b = zz(-2);
        b.extend(zz(8));
        for (k, v) in [("a", "x"), ("b", "y")] {
            b.extend(zz(1));
            b.extend_from_slice(k.as_bytes());
            b.extend(zz(1));
            b.extend_from_slice(v.as_bytes());
        }
        b.extend(zz(1));
        b.extend(zz(1));
        b.push(b'c');
        b.extend(zz(0));
        b.push(0);
        let mut got = Vec::new();
        let mut c = Cursor::new(&b, 0);
        c.map(|c, k| {
            let v = c.str()?;
            got.push((k.to_owned(), v.to_owned()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            got,
            [("a".into(), "x".into()), ("b".into(), "y".into()), ("c".into(), "".into())]
        );
        assert_eq!(c.remaining(), 0);
    }

    #[test]
    fn huge_map_counts_fail_without_looping() {
        let b = zz(i64::MAX);
        assert!(matches!(Cursor::new(&b, 0).map(|_, _| Ok(())), Err(Fail(Problem::BadLength, 0))));
        let b = zz(i64::MIN);
        assert!(Cursor::new(&b, 0).map(|_, _| Ok(())).is_err());
    }
}
