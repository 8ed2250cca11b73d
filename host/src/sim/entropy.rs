//! Unpredictable-looking bytes without a random-number crate: SHA-256 over a
//! per-instance seed (process id, wall clock, a process-wide counter and an
//! ASLR-dependent address) and a running counter. Good enough for a local
//! simulator whose secrets only need to differ between runs and instances.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

static INSTANCES: AtomicU64 = AtomicU64::new(0);

pub(crate) struct Entropy {
    seed: [u8; 32],
    counter: u64,
}

impl Entropy {
    pub(crate) fn from_environment() -> Entropy {
        let marker = 0u8;
        let mut hasher = Sha256::new();
        hasher.update(INSTANCES.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        hasher.update(nanos.to_le_bytes());
        hasher.update(std::process::id().to_le_bytes());
        hasher.update((&marker as *const u8 as usize).to_le_bytes());
        Entropy {
            seed: digest32(hasher),
            counter: 0,
        }
    }

    /// 32 fresh bytes; `label` separates uses so two purposes never share output.
    pub(crate) fn next_block(&mut self, label: &str) -> [u8; 32] {
        self.counter += 1;
        let mut hasher = Sha256::new();
        hasher.update(self.seed);
        hasher.update(label.as_bytes());
        hasher.update(self.counter.to_le_bytes());
        digest32(hasher)
    }

    /// `len` characters from `[A-Za-z0-9]`.
    pub(crate) fn alphanumeric(&mut self, label: &str, len: usize) -> String {
        const CHARS: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut out = String::with_capacity(len);
        while out.len() < len {
            for byte in self.next_block(label) {
                // Rejecting the top of the byte range keeps the choice unbiased.
                if byte < 248 && out.len() < len {
                    out.push(char::from(CHARS[usize::from(byte) % 62]));
                }
            }
        }
        out
    }
}

fn digest32(hasher: Sha256) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&hasher.finalize());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_differ_by_label_counter_and_instance() {
        let mut a = Entropy::from_environment();
        let mut b = Entropy::from_environment();
        let first = a.next_block("x");
        assert_ne!(first, a.next_block("x"));
        assert_ne!(a.next_block("x"), a.next_block("y"));
        assert_ne!(first, b.next_block("x"));
        let text = a.alphanumeric("t", 100);
        assert_eq!(text.len(), 100);
        assert!(text.bytes().all(|c| c.is_ascii_alphanumeric()));
    }
}
