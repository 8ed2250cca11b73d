//! The authorized app and service account a simulator instance accepts. They
//! are generated at every start so that nothing can come to depend on a fixed
//! secret, and they are shaped to break clients that skip form encoding:
//! `+`, `/`, `=`, `#`, `&` and `%` all occur where real Infor values have them.
//!
//! Public shape followed: the `ci`, `cs`, `saak` and `sask` values of a `.ionapi`
//! file that ION API's "Backend Service" authorized apps download (a
//! `TENANT~...` client id, a base64-looking secret, a `TENANT#...` access key).
//!
//! Randomness is fastrand's: not a CSPRNG, which a loopback simulator whose
//! secrets only need to differ between runs and instances does not need.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) saak: String,
    pub(crate) sask: String,
}

// Secrets must never reach a log through a stray `{:?}`.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub(crate) fn generate(tenant: &str) -> Credentials {
        let client_id = format!("{tenant}~{}", alphanumeric(43));

        // 48 random bytes: 64 base64 characters, no padding.
        let body = STANDARD.encode(random_bytes::<48>());
        // The splices guarantee the awkward characters even when the random
        // base64 happens to contain none of them.
        let client_secret = format!("{}+{}/{}=", &body[..21], &body[21..42], &body[42..62]);

        let saak = format!(
            "{tenant}#{}+{}/{}={}",
            alphanumeric(4),
            alphanumeric(1),
            alphanumeric(1),
            STANDARD_NO_PAD.encode(random_bytes::<32>()),
        );

        // `%` followed by two hex digits naming a printable ASCII character
        // (0x30-0x6F): a client that sends it raw has it silently decoded
        // into another character instead of failing loudly.
        let escape_digits = format!(
            "{}{}",
            fastrand::u8(3..=6),
            fastrand::digit(16).to_ascii_uppercase()
        );
        let sask = format!(
            "{}#{}+{}/{}={}&{}%{}{}",
            alphanumeric(8),
            alphanumeric(8),
            alphanumeric(8),
            alphanumeric(8),
            alphanumeric(8),
            alphanumeric(8),
            escape_digits,
            alphanumeric(12),
        );

        Credentials {
            client_id,
            client_secret,
            saak,
            sask,
        }
    }
}

/// `len` characters from `[A-Za-z0-9]`.
fn alphanumeric(len: usize) -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(len)
        .collect()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    fastrand::fill(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::form_decode;

    #[test]
    fn credentials_have_the_awkward_characters() {
        let creds = Credentials::generate("ACME_TST");
        assert!(creds.client_id.starts_with("ACME_TST~"));
        assert!(creds.client_id.len() > 40);
        let random_part = &creds.client_id["ACME_TST~".len()..];
        assert_eq!(random_part.len(), 43);
        assert!(random_part.bytes().all(|c| c.is_ascii_alphanumeric()));
        for c in ['+', '/', '='] {
            assert!(creds.client_secret.contains(c), "cs lacks {c}");
            assert!(creds.saak.contains(c), "saak lacks {c}");
        }
        assert!(creds.saak.starts_with("ACME_TST#"));
        for c in ['#', '+', '/', '=', '&', '%'] {
            assert!(creds.sask.contains(c), "sask lacks {c}");
        }
        let escape = &creds.sask[creds.sask.find('%').unwrap() + 1..][..2];
        assert!(form_decode(format!("%{escape}").as_bytes()).is_ok_and(|c| c.len() == 1));
        let other = Credentials::generate("ACME_TST");
        assert_ne!(creds.client_secret, other.client_secret);
        assert_ne!(creds.sask, other.sask);
        assert!(!format!("{creds:?}").contains(&creds.client_secret));
    }
}
