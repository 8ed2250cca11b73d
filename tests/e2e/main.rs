//! End-to-end tests: the real `ionflow` binary and the real connector
//! component against the gateway simulator, over loopback HTTP.

mod support;

mod auth_grants;
mod auth_lifecycle;
mod authoring;
mod cache_integrity;
mod cli_output;
mod concurrency;
mod connector_calls;
mod contract;
mod credentials_file;
mod daemon;
mod data_lake;
mod demo;
mod diagnostics;
mod embedding;
mod examples;
mod exit_codes;
mod grants;
mod ion_messages;
mod layout;
mod leftovers;
mod memory;
mod operations;
mod pipeline_run;
mod postgres;
mod record;
mod resilience;
mod response_cap;
mod runaway;
mod sandbox;
mod secrets;
mod shared_store;
mod sinks;
mod sources;
mod tenant_paths;
mod tooling;
mod traces;
mod unavailable;
mod validate_mistakes;
mod workers;
