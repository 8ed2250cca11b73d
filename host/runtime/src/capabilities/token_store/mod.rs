//! The `token-store` capability: compare-and-swap entries plus a lease per
//! key, shared by every connector instance that uses the same store.

mod file;
mod memory;

use futures::future::BoxFuture;

pub use super::super::bindings::ionflow::gateway::token_store::{Entry, StoreError};
pub use file::FileTokenStore;
pub use memory::MemoryTokenStore;

/// Where tokens live. Implementations must make `save` atomic with respect to
/// `expected_version`, and `lock` exclusive across everyone sharing the store.
pub trait TokenStore: Send + Sync + 'static {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>, StoreError>>;
    fn save<'a>(
        &'a self,
        key: &'a str,
        expected_version: u64,
        value: Option<String>,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
    fn lock<'a>(
        &'a self,
        key: &'a str,
        ttl_ms: u32,
        timeout_ms: u32,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
    fn unlock<'a>(&'a self, key: &'a str, lease: u64) -> BoxFuture<'a, ()>;
}
