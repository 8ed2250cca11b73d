//! The ionflow connector: Infor ION API Gateway authentication and calls,
//! compiled to a WebAssembly component (`wasm32-wasip2`).
//!
//! The pure parts (parsing `.ionapi` files, building token requests, reading
//! the gateway's answers) build and test on any target; the component glue
//! that binds them to the WIT world exists only on wasm32.

pub mod error;
pub mod ionapi;
pub mod lint;
pub mod oauth;
pub mod response;
pub mod secret;
pub mod url;

#[cfg(target_arch = "wasm32")]
mod component;
