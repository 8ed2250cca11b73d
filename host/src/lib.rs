//! ionflow: a sandboxed integration runtime for Infor CloudSuite.

pub mod sim;
