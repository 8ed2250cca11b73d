//! ionflow: a sandboxed integration runtime for Infor CloudSuite.
//!
//! The connector's sandbox is the `ionflow-runtime` crate (host/runtime) and
//! the gateway simulator the `ionflow-sim` crate (host/sim); this crate is
//! the `ionflow` command around them. `pipeline` moves records from a source
//! through jq transforms to sinks; `products` reads and writes Infor product
//! shapes; `cli` is the command line; `credentials` resolves a CONNECTION
//! argument to `.ionapi` JSON and checks where the file sits; `store` keeps
//! tokens, grant holders, state and schedule leases (files or PostgreSQL);
//! `grants` decides who may revoke a grant that processes share; `sandbox`
//! runs jq filters and templates so that a runaway one fails its record,
//! never the process; `traces` exports spans over OTLP when asked.

/// The unit tests count allocations as the binary does (see `sandbox::alloc`).
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: sandbox::alloc::Tracking<mimalloc::MiMalloc> =
    sandbox::alloc::Tracking(mimalloc::MiMalloc);

pub mod cli;
pub mod config;
pub mod credentials;
pub mod grants;
pub mod metrics;
pub mod pipeline;
pub mod products;
pub mod sandbox;
pub mod schedule;
pub mod serve;
pub mod store;
pub mod traces;
