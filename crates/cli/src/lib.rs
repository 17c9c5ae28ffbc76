//! modelwatch: the binary's library half. It reads and validates the configuration
//! ([`config`]); the pipeline wiring joins it as the adapter crates land.

pub mod config;
