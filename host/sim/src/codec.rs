//! The byte-level encodings the gateway decodes, on top of the crates that
//! implement them: `application/x-www-form-urlencoded` bodies and queries
//! (form_urlencoded, percent-encoding), HTTP Basic's base64 (base64), and
//! hex for opaque tokens.
//!
//! Public shape followed: the WHATWG URL standard's urlencoded format (which RFC
//! 6749 appendix B asks for) and RFC 4648 base64 as RFC 7617 uses it.
//!
//! Decoding is deliberately stricter than a browser's (and than
//! `form_urlencoded::parse`): a `%` that does not start a valid escape is an
//! error rather than a literal, and so is text that is not UTF-8 once decoded,
//! because the point of the simulator is to catch clients that forget to
//! encode values such as the service-account secret.

use std::fmt::Write as _;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, NO_PAD, PAD};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("malformed percent-encoding")]
    BadPercent,
    #[error("decoded text is not valid UTF-8")]
    NotUtf8,
}

/// Decodes one name or value of a form: `+` is a space, `%XX` a byte.
pub(crate) fn form_decode(raw: &[u8]) -> Result<String, DecodeError> {
    // percent_decode (like form_urlencoded::parse) keeps a stray `%` as is;
    // the simulator refuses it.
    let mut rest = raw;
    while let Some(at) = rest.iter().position(|b| *b == b'%') {
        match rest.get(at + 1..at + 3) {
            Some([high, low]) if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() => {
                rest = &rest[at + 3..];
            }
            _ => return Err(DecodeError::BadPercent),
        }
    }
    // `+` becomes a space before the escapes are decoded, so `%2B` stays `+`.
    let spaced: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    percent_encoding::percent_decode(&spaced)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| DecodeError::NotUtf8)
}

/// Encodes like the WHATWG urlencoded serializer (what RFC 6749 appendix B
/// asks for): only ASCII alphanumerics and `*-._` pass through, a space is
/// `+`, and everything else is `%XX` with upper-case hex, so a `+` in a
/// secret goes out as `%2B` and `~` as `%7E`.
pub(crate) fn form_encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
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

    /// Splits as `form_urlencoded::parse` does (on `&`, skipping empty
    /// pieces, then at the first `=`), but decodes strictly.
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

/// Decodes HTTP Basic credentials (RFC 7617): the standard alphabet with
/// padding required, as `general_purpose::STANDARD` decodes, except that
/// non-zero bits left over in the last symbol are ignored rather than
/// refused, as the simulator's decoder always did. Encode with `STANDARD`.
pub(crate) const BASE64_DECODER: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    PAD.with_decode_allow_trailing_bits(true),
);

/// Decodes base64url without padding (RFC 4648 section 5), the form of a
/// SAML assertion in the saml2-bearer grant (RFC 7522): like
/// `general_purpose::URL_SAFE_NO_PAD` (so `+`, `/` and `=` are refused), with
/// leftover bits ignored as in [`BASE64_DECODER`]. Encode with `URL_SAFE_NO_PAD`.
pub(crate) const BASE64URL_DECODER: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    NO_PAD.with_decode_allow_trailing_bits(true),
);

/// Lower-case hex, two digits a byte.
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

/// A fresh opaque token: 64 lower-case hex digits (256 random bits), the
/// shape of every token, code and assertion id the simulator issues. fastrand
/// is not a CSPRNG, which a loopback simulator whose tokens only need to
/// differ between runs and instances does not need.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    fastrand::fill(&mut bytes);
    hex(&bytes)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

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
        // A real U+FFFD is text like any other, not a decoding failure.
        assert_eq!(form_decode(b"%EF%BF%BD").unwrap(), "\u{FFFD}");
        assert_eq!(form_decode(b"%c3%bc").unwrap(), "ü");
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
            assert_eq!(STANDARD.encode(plain.as_bytes()), encoded);
            assert_eq!(BASE64_DECODER.decode(encoded).unwrap(), plain.as_bytes());
        }
        let binary: Vec<u8> = (0..=255).collect();
        assert_eq!(
            BASE64_DECODER.decode(STANDARD.encode(&binary)).unwrap(),
            binary
        );
        // Leftover bits in the last symbol are ignored (`Zh==` is not canonical).
        assert_eq!(BASE64_DECODER.decode("Zh==").unwrap(), b"f");
    }

    #[test]
    fn base64_rejects_garbage() {
        for bad in ["Zg", "Zg=", "Z===", "Zg==Zg==", "Zm9v!A==", "é", "===="] {
            assert!(BASE64_DECODER.decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn base64url_is_unpadded_and_url_safe() {
        let bytes: Vec<u8> = (0..=255).collect();
        let encoded = URL_SAFE_NO_PAD.encode(&bytes);
        assert!(!encoded.contains(['+', '/', '=']));
        assert_eq!(BASE64URL_DECODER.decode(&encoded).unwrap(), bytes);
        assert_eq!(BASE64URL_DECODER.decode("Zg").unwrap(), b"f");
        for bad in ["Zg==", "a+b/", "Z", "Zm9v!A"] {
            assert!(BASE64URL_DECODER.decode(bad).is_err(), "{bad:?}");
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
