//! The hand-written reader of Avro binary encoding used by the fast path.
//!
//! Every read checks the remaining bytes before it trusts a length or a count, so a corrupt
//! length can neither read out of bounds nor make anything allocate: strings are borrowed from
//! the payload and copied into the record's arena only after they were bounds-checked, and a
//! map's block count must not exceed the bytes that remain (each entry takes at least one byte).
//! Strings are read either checked ([`Cursor::str`], one UTF-8 validation per string) or raw
//! ([`Cursor::bytes`]) when the caller validates the record's text in one pass afterwards.

use crate::{DecodeError, Position, Problem};

/// A failed read: what and where (byte offset in the payload).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fail(pub(crate) Problem, pub(crate) usize);

/// A read position in one payload. Offsets are from the start of the payload, framing included.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    /// The bytes not read yet.
    rest: &'a [u8],
    /// The payload's length: the position is `len - rest.len()`.
    len: usize,
}

/// Undoes the zigzag encoding of a varint's bits.
#[inline(always)]
fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8], pos: usize) -> Self {
        Self { rest: buf.get(pos..).unwrap_or_default(), len: buf.len() }
    }

    #[inline(always)]
    pub(crate) fn pos(&self) -> usize {
        self.len - self.rest.len()
    }

    #[inline(always)]
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// A zigzag-encoded `long` (or `int`). One-byte varints (-64..=63) take the inlined path.
    #[inline(always)]
    pub(crate) fn long(&mut self) -> Result<i64, Fail> {
        if let Some((&b, rest)) = self.rest.split_first()
            && b < 0x80
        {
            self.rest = rest;
            return Ok(unzigzag(u64::from(b)));
        }
        self.long_multi()
    }

    /// A varint of more than one byte (or a truncated one): at most 10 bytes, the 10th at most 1.
    #[inline(never)]
    fn long_multi(&mut self) -> Result<i64, Fail> {
        // Up to 8 bytes (a millisecond timestamp takes 6) from one 64-bit load: the first byte
        // without the continuation bit ends it, and the 7-bit groups are shifted together.
        if let Some(block) = self.rest.first_chunk::<8>() {
            let w = u64::from_le_bytes(*block);
            let stops = !w & 0x8080_8080_8080_8080;
            if stops != 0 {
                let len = (stops.trailing_zeros() / 8 + 1) as usize;
                let w = w & (u64::MAX >> (64 - 8 * len)) & 0x7f7f_7f7f_7f7f_7f7f;
                let mut v = 0;
                for i in 0..8 {
                    v |= (w >> i) & (0x7f << (7 * i));
                }
                self.rest = &self.rest[len..];
                return Ok(unzigzag(v));
            }
        }
        let start = self.pos();
        let mut v: u64 = 0;
        for (i, &b) in self.rest.iter().enumerate().take(10) {
            if i == 9 && b > 1 {
                return Err(Fail(Problem::BadVarint, start));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Ok(unzigzag(v));
            }
        }
        // Fewer than 10 bytes, all with the continuation bit.
        Err(Fail(Problem::Truncated, start))
    }

    /// A little-endian IEEE 754 `double`.
    #[inline(always)]
    pub(crate) fn double(&mut self) -> Result<f64, Fail> {
        match self.rest.split_first_chunk::<8>() {
            Some((b, rest)) => {
                self.rest = rest;
                Ok(f64::from_le_bytes(*b))
            }
            None => Err(Fail(Problem::Truncated, self.pos())),
        }
    }

    /// A `string` (or `bytes`): a length, then that many bytes, borrowed from the payload and
    /// not validated as UTF-8.
    #[inline(always)]
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], Fail> {
        self.bytes_and_rest().map(|(bytes, _)| bytes)
    }

    /// [`Cursor::bytes`], and the rest of the payload from the bytes' start.
    #[inline(always)]
    pub(crate) fn bytes_and_rest(&mut self) -> Result<(&'a [u8], &'a [u8]), Fail> {
        // A one-byte varint of an even number is a length 0..=63 as it stands (zigzag of n is
        // 2n): no decoding, no sign to check.
        if let Some((&b, from)) = self.rest.split_first()
            && b & 0x81 == 0
            && let Some((bytes, rest)) = from.split_at_checked(usize::from(b >> 1))
        {
            self.rest = rest;
            return Ok((bytes, from));
        }
        self.bytes_and_rest_slow()
    }

    /// [`Cursor::bytes_and_rest`] of a longer or negative length, or one past the end.
    #[inline(never)]
    fn bytes_and_rest_slow(&mut self) -> Result<(&'a [u8], &'a [u8]), Fail> {
        let before = self.rest;
        let len = self.long()?;
        let from = self.rest;
        let split = usize::try_from(len).ok().and_then(|n| self.rest.split_at_checked(n));
        match split {
            Some((bytes, rest)) => {
                self.rest = rest;
                Ok((bytes, from))
            }
            None => Err(Fail(Problem::BadLength, self.len - before.len())),
        }
    }

    /// A `string`: a length, then that many bytes of UTF-8, borrowed from the payload.
    #[inline]
    pub(crate) fn str(&mut self) -> Result<&'a str, Fail> {
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes).map_err(|_| Fail(Problem::InvalidUtf8, self.pos() - bytes.len()))
    }

    /// A union branch index, which must be below `branches`.
    #[inline(always)]
    pub(crate) fn branch(&mut self, branches: i64) -> Result<i64, Fail> {
        let start = self.pos();
        let i = self.long()?;
        if (0..branches).contains(&i) { Ok(i) } else { Err(Fail(Problem::BadUnionIndex, start)) }
    }

    /// `["null", T]`: `None` for branch 0, `read` for branch 1.
    #[inline(always)]
    pub(crate) fn nullable<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, Fail>,
    ) -> Result<Option<T>, Fail> {
        // The branch index as it stands: 0 is branch 0, 2 is branch 1 (zigzag).
        match self.rest.split_first() {
            Some((0, rest)) => {
                self.rest = rest;
                Ok(None)
            }
            Some((2, rest)) => {
                self.rest = rest;
                read(self).map(Some)
            }
            _ => match self.branch(2)? {
                0 => Ok(None),
                _ => read(self).map(Some),
            },
        }
    }

    /// The entry count of a `map`'s (or an `array`'s) next block; 0 ends the map.
    ///
    /// A map is blocks of entries until a zero count; a negative count `-n` means `n` entries
    /// preceded by the block's byte size. The count is checked against the remaining bytes (an
    /// entry takes at least one), so a caller may loop over it without further checks:
    ///
    /// ```ignore
    /// loop {
    ///     let n = c.block()?;
    ///     if n == 0 { break }
    ///     for _ in 0..n { /* key, then value */ }
    /// }
    /// ```
    #[inline(always)]
    pub(crate) fn block(&mut self) -> Result<usize, Fail> {
        if let Some((&b, rest)) = self.rest.split_first()
            && b < 0x80
            && b & 1 == 0
        {
            // A one-byte count 0..=63.
            let n = usize::from(b >> 1);
            if n <= rest.len() {
                self.rest = rest;
                return Ok(n);
            }
        }
        self.block_slow()
    }

    /// [`Cursor::block`] for negative, long or out-of-bounds counts.
    #[inline(never)]
    fn block_slow(&mut self) -> Result<usize, Fail> {
        let start = self.pos();
        let mut n = self.long()?;
        if n < 0 {
            n = n.checked_neg().ok_or(Fail(Problem::BadLength, start))?;
            let size_at = self.pos();
            let size = self.long()?;
            if size < 0 || size as u64 > self.remaining() as u64 {
                return Err(Fail(Problem::BadLength, size_at));
            }
        }
        if n as u64 > self.remaining() as u64 {
            return Err(Fail(Problem::BadLength, start));
        }
        Ok(n as usize)
    }
}

/// Runs one field's read, turning a [`Fail`] into a [`DecodeError::Field`] naming the field.
#[inline(always)]
pub(crate) fn field<'a, T>(
    c: &mut Cursor<'a>,
    name: &'static str,
    read: impl FnOnce(&mut Cursor<'a>) -> Result<T, Fail>,
) -> Result<T, DecodeError> {
    match read(c) {
        Ok(v) => Ok(v),
        Err(fail) => Err(field_error(name, fail)),
    }
}

/// The error of [`field`], out of line: the fast path reads some forty fields, and their error
/// paths inline would spread its hot code over many more cache lines.
#[cold]
#[inline(never)]
fn field_error(name: &'static str, Fail(p, at): Fail) -> DecodeError {
    DecodeError::field(name, p, Position::Byte(at))
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
    fn varints_followed_by_more_bytes_read_as_alone() {
        // With 8 bytes or more left, varints of up to 8 bytes are read from one 64-bit load.
        let mut values = vec![0, -1, 1, 63, -64, 64, -65, i64::MAX, i64::MIN, 1_779_089_412_345];
        values.extend((0..63).map(|k| 1i64 << k));
        values.extend((0..63).map(|k| -(1i64 << k)));
        values.extend((0..63).map(|k| (1i64 << k) - 1));
        for v in values {
            for junk in [0x00, 0x7f, 0x80, 0xff] {
                let mut b = zz(v);
                let len = b.len();
                b.extend([junk; 9]);
                let mut c = Cursor::new(&b, 0);
                assert_eq!(c.long().unwrap(), v, "{v} then {junk:#x}");
                assert_eq!(c.pos(), len, "{v} then {junk:#x}");
            }
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
        loop {
            let n = c.block().unwrap();
            if n == 0 {
                break;
            }
            for _ in 0..n {
                got.push((c.str().unwrap().to_owned(), c.str().unwrap().to_owned()));
            }
        }
        assert_eq!(
            got,
            [("a".into(), "x".into()), ("b".into(), "y".into()), ("c".into(), "".into())]
        );
        assert_eq!(c.remaining(), 0);
    }

    #[test]
    fn huge_map_counts_fail_without_looping() {
        let b = zz(i64::MAX);
        assert!(matches!(Cursor::new(&b, 0).block(), Err(Fail(Problem::BadLength, 0))));
        let b = zz(i64::MIN);
        assert!(Cursor::new(&b, 0).block().is_err());
        // A one-byte count larger than what remains.
        let mut b = zz(3);
        b.extend_from_slice(&[0, 0]);
        assert!(matches!(Cursor::new(&b, 0).block(), Err(Fail(Problem::BadLength, 0))));
        let mut b = zz(2);
        b.extend_from_slice(&[0, 0]);
        assert_eq!(Cursor::new(&b, 0).block().unwrap(), 2);
    }
}
