//! The authorized app and service account a simulator instance accepts. They
//! are generated at every start so that nothing can come to depend on a fixed
//! secret, and they are shaped to break clients that skip form encoding:
//! `+`, `/`, `=`, `#`, `&` and `%` all occur where real Infor values have them.

use super::codec::{base64_encode, hex};
use super::entropy::Entropy;

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
    pub(crate) fn generate(tenant: &str, entropy: &mut Entropy) -> Credentials {
        let client_id = format!("{tenant}~{}", entropy.alphanumeric("ci", 43));

        let mut secret_bytes = entropy.next_block("cs").to_vec();
        secret_bytes.extend_from_slice(&entropy.next_block("cs")[..16]);
        let body = base64_encode(&secret_bytes);
        // The splices guarantee the awkward characters even when the random
        // base64 happens to contain none of them.
        let client_secret = format!("{}+{}/{}=", &body[..21], &body[21..42], &body[42..62]);

        let saak = format!(
            "{tenant}#{}+{}/{}={}",
            entropy.alphanumeric("saak", 4),
            entropy.alphanumeric("saak", 1),
            entropy.alphanumeric("saak", 1),
            base64_encode(&entropy.next_block("saak")).trim_end_matches('='),
        );

        // `%` followed by two hex digits naming a printable ASCII character:
        // a client that sends it raw has it silently decoded into another
        // character instead of failing loudly.
        let random = entropy.next_block("sask");
        let escape_digits = format!(
            "{}{}",
            char::from(b"3456"[usize::from(random[0] % 4)]),
            hex(&random[1..2]).to_uppercase().split_at(1).0
        );
        let sask = format!(
            "{}#{}+{}/{}={}&{}%{}{}",
            entropy.alphanumeric("sask", 8),
            entropy.alphanumeric("sask", 8),
            entropy.alphanumeric("sask", 8),
            entropy.alphanumeric("sask", 8),
            entropy.alphanumeric("sask", 8),
            entropy.alphanumeric("sask", 8),
            escape_digits,
            entropy.alphanumeric("sask", 12),
        );

        Credentials {
            client_id,
            client_secret,
            saak,
            sask,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_have_the_awkward_characters() {
        let creds = Credentials::generate("ACME_TST", &mut Entropy::from_environment());
        assert!(creds.client_id.starts_with("ACME_TST~"));
        assert!(creds.client_id.len() > 40);
        for c in ['+', '/', '='] {
            assert!(creds.client_secret.contains(c), "cs lacks {c}");
            assert!(creds.saak.contains(c), "saak lacks {c}");
        }
        assert!(creds.saak.starts_with("ACME_TST#"));
        for c in ['#', '+', '/', '=', '&', '%'] {
            assert!(creds.sask.contains(c), "sask lacks {c}");
        }
        let other = Credentials::generate("ACME_TST", &mut Entropy::from_environment());
        assert_ne!(creds.client_secret, other.client_secret);
        assert_ne!(creds.sask, other.sask);
        assert!(!format!("{creds:?}").contains(&creds.client_secret));
    }
}
