//! ionflow: a sandboxed integration runtime for Infor CloudSuite.
//!
//! The connector's sandbox is the `ionflow-runtime` crate (host/runtime) and
//! the gateway simulator the `ionflow-sim` crate (host/sim); this crate is
//! the `ionflow` command around them. `pipeline` moves records from a source
//! through jq transforms to sinks; `products` reads and writes Infor product
//! shapes; `cli` is the command line; `credentials` resolves a CONNECTION
//! argument to `.ionapi` JSON and checks where the file sits; `store` keeps
//! tokens, state and schedule leases (files or PostgreSQL).

pub mod cli;
pub mod config;
pub mod credentials;
pub mod metrics;
pub mod pipeline;
pub mod products;
pub mod schedule;
pub mod serve;
pub mod store;
