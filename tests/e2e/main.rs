//! End-to-end tests: the real `ionflow` binary and the real connector
//! component against the gateway simulator, over loopback HTTP.

mod support;

mod connector_calls;
mod credentials_file;
mod demo;
mod diagnostics;
mod pipeline_run;
mod sandbox;
mod secrets;
