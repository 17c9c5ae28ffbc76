//! A strict reader of the plain subset of JSON, for the fast JSON path.
//!
//! Contract: the reader either reads a value exactly as serde_json would (same value, same
//! acceptance) or gives up with [`Bail`]; it never accepts what serde_json rejects. Whatever it
//! does not handle (escapes in strings, nested containers in unknown fields, numbers serde_json
//! would turn into another type), it gives up on, and the caller decodes the object again with
//! serde_json, which then yields the value or the precise error (field, line, column). So the
//! reader needs no error reporting of its own.
//!
//! UTF-8: serde_json rejects invalid UTF-8 in strings, and anywhere else a byte above ASCII is a
//! syntax error, which the grammar here bails on. So only strings need a check, and the reader
//! leaves it to the caller: [`Scanner::raw_str`] hands out a string's bytes as they are, for
//! strings the record keeps (the record validates all its text in one pass at the end), and
//! [`Scanner::str`] checks the string it returns, for the few strings that are not kept.

use crate::inference::Piece;

/// The fast path does not handle this input; decode it with serde_json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bail;

/// The result of one read.
pub(crate) type Scan<T> = Result<T, Bail>;

/// A read position in one JSON text.
#[derive(Debug)]
pub(crate) struct Scanner<'a> {
    text: &'a [u8],
    pos: usize,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The first byte of `b` that ends a plain string: `"`, `\` or a control character.
#[inline(always)]
fn string_end(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(chunk) = b.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let w = u64::from_le_bytes(*chunk);
        // Bytes equal to `"`, equal to `\`, or below 0x20, eight at a time. Each test flags
        // its first match exactly (it can only misfire above a true match), so the lowest
        // flagged byte is the first one that ends the string.
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let m = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (w.wrapping_sub(ONES * 0x20) & !w);
        let m = m & HIGHS;
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b.get(i..)?.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).map(|p| i + p)
}

#[inline(always)]
fn digits(b: &[u8], mut i: usize) -> usize {
    while let Some(b'0'..=b'9') = b.get(i) {
        i += 1;
    }
    i
}

/// Where the optional minus and the integer part of a number starting at `from` end: one `0`,
/// or a digit from 1 to 9 and any digits after it. Bails when there is none.
#[inline(always)]
fn integer_part_end(b: &[u8], from: usize) -> Scan<usize> {
    let i = from + usize::from(b.get(from) == Some(&b'-'));
    match b.get(i) {
        Some(b'0') => Ok(i + 1),
        Some(b'1'..=b'9') => Ok(digits(b, i + 1)),
        _ => Err(Bail),
    }
}

impl<'a> Scanner<'a> {
    /// A scanner over `text`.
    #[inline]
    pub(crate) fn new(text: &'a [u8]) -> Self {
        Self { text, pos: 0 }
    }

    #[inline(always)]
    fn bytes(&self) -> &'a [u8] {
        self.text
    }

    /// The next byte that is not whitespace, not consumed.
    #[inline(always)]
    fn peek(&mut self) -> Option<u8> {
        // Compact JSON has no whitespace between tokens: one comparison decides.
        match self.bytes().get(self.pos) {
            Some(&c) if c > b' ' => Some(c),
            _ => self.peek_past_whitespace(),
        }
    }

    #[inline]
    fn peek_past_whitespace(&mut self) -> Option<u8> {
        let b = self.bytes();
        while let Some(&c) = b.get(self.pos) {
            if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(c);
            }
            self.pos += 1;
        }
        None
    }

    /// Consumes `b` after optional whitespace.
    #[inline(always)]
    pub(crate) fn eat(&mut self, b: u8) -> Scan<()> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// Only whitespace remains (serde_json's `end`).
    #[inline]
    pub(crate) fn end(&mut self) -> Scan<()> {
        if self.peek().is_none() { Ok(()) } else { Err(Bail) }
    }

    #[inline(always)]
    fn literal(&mut self, lit: &[u8]) -> bool {
        let end = self.pos + lit.len();
        if self.bytes().get(self.pos..end) == Some(lit) {
            self.pos = end;
            true
        } else {
            false
        }
    }

    /// Consumes `null` when it comes next.
    #[inline(always)]
    pub(crate) fn null(&mut self) -> Scan<bool> {
        if self.peek() != Some(b'n') {
            return Ok(false);
        }
        if self.literal(b"null") { Ok(true) } else { Err(Bail) }
    }

    /// A value of `["null", T]`.
    #[inline(always)]
    pub(crate) fn opt<T>(&mut self, read: impl FnOnce(&mut Self) -> Scan<T>) -> Scan<Option<T>> {
        if self.null()? { Ok(None) } else { read(self).map(Some) }
    }

    /// A string without escapes or control characters (serde_json rejects those unescaped), its
    /// bytes not checked as UTF-8: the caller checks them (see the module docs).
    #[inline(always)]
    pub(crate) fn raw_str(&mut self) -> Scan<Piece<'a>> {
        self.eat(b'"')?;
        let rest = self.bytes().get(self.pos..).unwrap_or_default();
        let n = string_end(rest).ok_or(Bail)?;
        if rest.get(n) != Some(&b'"') {
            return Err(Bail);
        }
        self.pos += n + 1;
        Ok(Piece { bytes: rest.get(..n).ok_or(Bail)?, rest })
    }

    /// A string as [`Scanner::raw_str`] reads it, checked as UTF-8.
    #[inline]
    pub(crate) fn str(&mut self) -> Scan<&'a str> {
        std::str::from_utf8(self.raw_str()?.bytes).map_err(|_| Bail)
    }

    /// The first key of an object (after `{`) or the next one (after `,`); `None` at `}`.
    #[inline(always)]
    pub(crate) fn key(&mut self, first: &mut bool) -> Scan<Option<Piece<'a>>> {
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(None);
        }
        if !*first {
            self.eat(b',')?;
        }
        *first = false;
        let k = self.raw_str()?;
        self.eat(b':')?;
        Ok(Some(k))
    }

    /// A number token checked against JSON's grammar, and whether it is an integer (no
    /// fraction, no exponent).
    #[inline(always)]
    fn number(&mut self) -> Scan<(&'a [u8], bool)> {
        self.peek();
        let b = self.bytes();
        let from = self.pos;
        let mut i = integer_part_end(b, from)?;
        let mut integer = true;
        if b.get(i) == Some(&b'.') {
            integer = false;
            let d = digits(b, i + 1);
            if d == i + 1 {
                return Err(Bail);
            }
            i = d;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            integer = false;
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            let d = digits(b, i);
            if d == i {
                return Err(Bail);
            }
            i = d;
        }
        self.pos = i;
        Ok((b.get(from..i).ok_or(Bail)?, integer))
    }

    /// A number read as serde_json's `deserialize_f64` reads it (with its `float_roundtrip`
    /// feature: correctly rounded). Numbers out of an `f64`'s range are left to serde_json.
    ///
    /// One pass: the sign and integer part are checked against JSON's grammar here (fast_float
    /// also takes `+1`, `01`, `.5`, `1.`, `inf` and `nan`), then fast_float reads the number
    /// and says where it ends. An exponent without digits (`1e`) is not taken by fast_float,
    /// so the `e` is left where the caller finds it and bails.
    #[inline(always)]
    pub(crate) fn f64(&mut self) -> Scan<f64> {
        self.peek();
        let b = self.bytes();
        let from = self.pos;
        let i = integer_part_end(b, from)?;
        match b.get(i) {
            Some(b'0'..=b'9') => return Err(Bail),
            Some(b'.') if !matches!(b.get(i + 1), Some(b'0'..=b'9')) => return Err(Bail),
            _ => {}
        }
        let (v, n) = fast_float2::parse_partial::<f64, _>(b.get(from..).unwrap_or_default())
            .map_err(|_| Bail)?;
        self.pos = from + n;
        if v.is_finite() { Ok(v) } else { Err(Bail) }
    }

    /// An integer read as serde_json's `deserialize_i64` reads it; anything else bails.
    #[inline]
    pub(crate) fn i64(&mut self) -> Scan<i64> {
        match self.number()? {
            // `-0` is a float to serde_json, not an integer.
            (t, true) if t != b"-0" => parse_i64(t),
            _ => Err(Bail),
        }
    }

    /// `event_time` as epoch milliseconds, as the serde path reads it: an integer, or a float
    /// truncated towards zero. `None` for a string (the caller parses RFC 3339).
    #[inline]
    pub(crate) fn epoch_ms(&mut self) -> Scan<Option<i64>> {
        if self.peek() == Some(b'"') {
            return Ok(None);
        }
        match self.number()? {
            // `-0` is a float to serde_json: truncated, it is 0 too.
            (t, true) => parse_i64(t).map(Some),
            (t, false) => {
                let v: f64 = fast_float2::parse(t).map_err(|_| Bail)?;
                // As the serde path: i64::MAX as f64 rounds up to 2^63, hence `<`.
                if v >= i64::MIN as f64 && v < i64::MAX as f64 {
                    Ok(Some(v.trunc() as i64))
                } else {
                    Err(Bail)
                }
            }
        }
    }

    /// Skips the value of an unknown field: a string without escapes, a number, `true`,
    /// `false` or `null`. Containers are left to serde_json.
    #[inline]
    pub(crate) fn skip_scalar(&mut self) -> Scan<()> {
        match self.peek() {
            Some(b'"') => self.str().map(drop),
            Some(b'-' | b'0'..=b'9') => self.f64().map(drop),
            _ if self.literal(b"true") || self.literal(b"false") || self.literal(b"null") => Ok(()),
            _ => Err(Bail),
        }
    }
}

/// An integer token (an optional `-` and ASCII digits, checked by [`Scanner::number`]); out of
/// range bails, as serde_json reads it as another type there.
#[inline]
fn parse_i64(token: &[u8]) -> Scan<i64> {
    let (negative, digits) = match token.split_first() {
        Some((b'-', digits)) => (true, digits),
        _ => (false, token),
    };
    // Up to 18 digits cannot overflow (an epoch in milliseconds has 13): summed as they come,
    // without the generic parser's checks on every digit.
    if digits.len() > 18 {
        return std::str::from_utf8(token).ok().and_then(|t| t.parse().ok()).ok_or(Bail);
    }
    let v = digits.iter().fold(0i64, |v, &d| v * 10 + i64::from(d.wrapping_sub(b'0')));
    Ok(if negative { -v } else { v })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn f(text: &str) -> Scan<f64> {
        let mut s = Scanner::new(text.as_bytes());
        let v = s.f64()?;
        s.end().map(|()| v)
    }

    #[test]
    fn numbers_follow_json_grammar_and_round_correctly() {
        for ok in [
            "0",
            "-0",
            "1",
            "12.5",
            "-0.25",
            "1e3",
            "1E-3",
            "2.5e+2",
            "12.345678901234567",
            "9007199254740993",
            "123456789012345678901234567890",
            "0.000001",
            "1e-400",
            "4.9e-324",
            "1.7976931348623157e308",
            "0e0",
            "-0.5E+10",
            "0.000000000000000000000000000001e30",
        ] {
            let want: f64 = ok.parse().unwrap();
            let got = f(ok).unwrap();
            assert_eq!(got.to_bits(), want.to_bits(), "{ok}");
            let serde: f64 = serde_json::from_str(ok).unwrap();
            assert_eq!(got.to_bits(), serde.to_bits(), "{ok} vs serde_json");
        }
        for bad in [
            "", "-", "01", "-01", "00", "1.", "1.e5", ".5", "-.5", "1e", "1e+", "1e5.5", "+1",
            "1x", "0x1", "NaN", "-inf", "inf", "infinity", "1e400",
        ] {
            assert_eq!(f(bad), Err(Bail), "{bad}");
        }
    }

    #[test]
    fn integers_are_what_serde_json_reads_as_i64() {
        let i = |t: &str| Scanner::new(t.as_bytes()).i64();
        assert_eq!(i("42"), Ok(42));
        assert_eq!(i("-42"), Ok(-42));
        assert_eq!(i("0"), Ok(0));
        assert_eq!(i("1700000330000"), Ok(1_700_000_330_000));
        assert_eq!(i("-1700000330000"), Ok(-1_700_000_330_000));
        assert_eq!(i("999999999999999999"), Ok(999_999_999_999_999_999));
        assert_eq!(i("-999999999999999999"), Ok(-999_999_999_999_999_999));
        assert_eq!(i("9223372036854775807"), Ok(i64::MAX));
        assert_eq!(i("-9223372036854775808"), Ok(i64::MIN));
        for bad in ["-0", "1.0", "1e2", "9223372036854775808", "-9223372036854775809", "null"] {
            assert_eq!(i(bad), Err(Bail), "{bad}");
        }
    }

    #[test]
    fn strings_with_escapes_or_control_characters_bail() {
        let s = |t: &str| Scanner::new(t.as_bytes()).str().map(str::to_owned);
        assert_eq!(s(r#" "abc" "#), Ok("abc".to_owned()));
        assert_eq!(s(r#""""#), Ok(String::new()));
        assert_eq!(s(r#""a long string with \u00e9 in it""#), Err(Bail));
        assert_eq!(s(r#""sixteen bytes..." "#), Ok("sixteen bytes...".to_owned()));
        assert_eq!(s("\"caf\u{e9} and more text\""), Ok("caf\u{e9} and more text".to_owned()));
        assert_eq!(s("\"0123456789abcde\u{7f}\u{1f}\""), Err(Bail));
        assert_eq!(s("\"0123456789abcdef\u{7f}\""), Ok("0123456789abcdef\u{7f}".to_owned()));
        assert_eq!(s(r#""a\"b""#), Err(Bail));
        assert_eq!(s("\"a\tb\""), Err(Bail));
        assert_eq!(s("\"abc"), Err(Bail));
    }
}
