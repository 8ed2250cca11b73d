//! How Infor products shape their answers inside an HTTP 200 (or 400):
//! shared by pipeline sources and sinks.

pub mod compass;
pub mod ido;
pub mod m3;
