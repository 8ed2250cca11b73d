//! End-to-end tests: the real `ionflow` binary and the real connector
//! component against the gateway simulator, over loopback HTTP.

mod support;

mod connector_calls;
mod credentials_file;
mod demo;
mod examples;
mod memory;
mod pipeline_run;
mod secrets;
mod sinks;
mod sources;
mod tooling;
mod validate_mistakes;
