//! End-to-end tests: the real `ionflow` binary and the real connector
//! component against the gateway simulator, over loopback HTTP.

mod support;

mod auth_grants;
mod auth_lifecycle;
mod authoring;
mod concurrency;
mod connector_calls;
mod contract;
mod credentials_file;
mod daemon;
mod demo;
mod diagnostics;
mod embedding;
mod examples;
mod memory;
mod pipeline_run;
mod postgres;
mod resilience;
mod sandbox;
mod secrets;
mod sinks;
mod sources;
mod tooling;
mod validate_mistakes;
mod workers;
