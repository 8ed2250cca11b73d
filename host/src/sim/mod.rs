//! Local ION API Gateway simulator (being written).
