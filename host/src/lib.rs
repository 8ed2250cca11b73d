//! ionflow: a sandboxed integration runtime for Infor CloudSuite.
//!
//! `runtime` runs the Infor connector (a WebAssembly component) and lends it
//! its capabilities; `pipeline` moves records from a source through jq
//! transforms to sinks; `products` reads Infor product answers; `sim` is a
//! local ION API Gateway; `cli` is the `ionflow` command; `credentials`
//! resolves a CONNECTION argument to `.ionapi` JSON and checks where the file
//! sits; `store` keeps tokens, state and schedule leases (files or
//! PostgreSQL); `secret` holds secrets so that formatting never shows them.

pub mod cli;
pub mod credentials;
pub mod pipeline;
pub mod products;
pub mod runtime;
pub mod schedule;
pub mod secret;
pub mod serve;
pub mod sim;
pub mod store;
