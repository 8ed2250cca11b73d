//! The byte-level encodings the gateway decodes: `application/x-www-form-urlencoded`
//! bodies and queries, HTTP Basic's base64, and hex for opaque tokens.
//!
//! Decoding is deliberately stricter than a browser's: a `%` that does not
//! start a valid escape is an error rather than a literal, because the point of
//! the simulator is to catch clients that forget to encode values such as the
//! service-account secret.

use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("malformed percent-encoding")]
    BadPercent,
    #[error("decoded text is not valid UTF-8")]
    NotUtf8,
    #[error("not valid base64")]
    BadBase64,
}

/// Decodes one name or value of a form: `+` is a space, `%XX` a byte.
pub(crate) fn form_decode(raw: &[u8]) -> Result<String, DecodeError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let high = raw.get(i + 1).and_then(|b| hex_value(*b));
                let low = raw.get(i + 2).and_then(|b| hex_value(*b));
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(DecodeError::BadPercent);
                };
                out.push((high << 4) | low);
                i += 3;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| DecodeError::NotUtf8)
}

/// Encodes like the WHATWG urlencoded serializer (what RFC 6749 appendix B
/// asks for): only ASCII alphanumerics and `*-._` pass through.
pub(crate) fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    out
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParamsError {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    // RFC 6749 section 3.1 forbids repeating a parameter; the other APIs
    // would silently pick one, which hides client bugs.
    #[error("parameter `{0}` appears more than once")]
    Duplicate(String),
}

/// Decoded form or query parameters, in arrival order, names unique.
#[derive(Debug, Clone, Default)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub(crate) fn parse(raw: &[u8]) -> Result<Params, ParamsError> {
        Self::parse_with(raw, false)
    }

    /// For APIs whose parameter names are case-insensitive (ASP.NET model
    /// binding behind Mongoose): names come back lower-cased.
    pub(crate) fn parse_case_insensitive(raw: &[u8]) -> Result<Params, ParamsError> {
        Self::parse_with(raw, true)
    }

    fn parse_with(raw: &[u8], fold_case: bool) -> Result<Params, ParamsError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for segment in raw.split(|b| *b == b'&').filter(|s| !s.is_empty()) {
            let (name, value) = match segment.iter().position(|b| *b == b'=') {
                Some(at) => (&segment[..at], &segment[at + 1..]),
                None => (segment, &[][..]),
            };
            let mut name = form_decode(name)?;
            if fold_case {
                name.make_ascii_lowercase();
            }
            if pairs.iter().any(|(existing, _)| *existing == name) {
                return Err(ParamsError::Duplicate(clip(&name, 40)));
            }
            pairs.push((name, form_decode(value)?));
        }
        Ok(Params { pairs })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// Shortens untrusted text before it is echoed in an error message.
pub(crate) fn clip(text: &str, max_chars: usize) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(max_chars).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (k, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if k <= chunk.len() {
                out.push(char::from(BASE64_ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard alphabet, padding required: the form RFC 7617 specifies.
pub(crate) fn base64_decode(text: &str) -> Result<Vec<u8>, DecodeError> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return Err(DecodeError::BadBase64);
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let quads = bytes.len() / 4;
    for (index, quad) in bytes.chunks(4).enumerate() {
        let last = index + 1 == quads;
        let padding = quad.iter().rev().take_while(|b| **b == b'=').count();
        if padding > 2 || (padding > 0 && !last) {
            return Err(DecodeError::BadBase64);
        }
        let mut n = 0u32;
        for &c in &quad[..4 - padding] {
            let value = BASE64_ALPHABET
                .iter()
                .position(|a| *a == c)
                .ok_or(DecodeError::BadBase64)?;
            n = (n << 6) | value as u32;
        }
        n <<= 6 * padding as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - padding]);
    }
    Ok(out)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Equality whose running time does not depend on where the inputs differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_round_trips_hostile_values() {
        let hostile = "ACME_TST#Q3kP+w/x=a&b%41 c~ü";
        let encoded = form_encode(hostile);
        assert_eq!(encoded, "ACME_TST%23Q3kP%2Bw%2Fx%3Da%26b%2541+c%7E%C3%BC");
        assert_eq!(form_decode(encoded.as_bytes()).unwrap(), hostile);
    }

    #[test]
    fn form_decode_is_strict() {
        assert_eq!(form_decode(b"a+b%2B").unwrap(), "a b+");
        assert_eq!(form_decode(b"%"), Err(DecodeError::BadPercent));
        assert_eq!(form_decode(b"%4"), Err(DecodeError::BadPercent));
        assert_eq!(form_decode(b"%zz"), Err(DecodeError::BadPercent));
        assert_eq!(form_decode(b"%FF"), Err(DecodeError::NotUtf8));
    }

    #[test]
    fn params_parse_and_reject_duplicates() {
        let p = Params::parse(b"grant_type=password&&username=a%23b&flag&x=").unwrap();
        assert_eq!(p.get("grant_type"), Some("password"));
        assert_eq!(p.get("username"), Some("a#b"));
        assert_eq!(p.get("flag"), Some(""));
        assert_eq!(p.get("x"), Some(""));
        assert_eq!(p.get("missing"), None);
        assert_eq!(
            Params::parse(b"a=1&a=2").unwrap_err(),
            ParamsError::Duplicate("a".into())
        );
        let folded = Params::parse_case_insensitive(b"RecordCap=5").unwrap();
        assert_eq!(folded.get("recordcap"), Some("5"));
        assert!(Params::parse_case_insensitive(b"recordCap=5&RECORDCAP=6").is_err());
        assert!(Params::parse(b"a=%zz").is_err());
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).unwrap(), plain.as_bytes());
        }
        let binary: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&binary)).unwrap(), binary);
    }

    #[test]
    fn base64_rejects_garbage() {
        for bad in ["Zg", "Zg=", "Z===", "Zg==Zg==", "Zm9v!A==", "é", "===="] {
            assert_eq!(base64_decode(bad), Err(DecodeError::BadBase64), "{bad:?}");
        }
    }

    #[test]
    fn small_helpers() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(clip("ab", 3), "ab");
    }
}
