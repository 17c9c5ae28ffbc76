//! modelwatch: the binary's library half: the configuration ([`config`]), the HTTP endpoints
//! ([`http`]) and the wiring of `modelwatch run` ([`serve`]).

pub mod alerting;
pub mod channels;
pub mod config;
pub mod http;
pub mod serve;
