//! modelwatch: the binary's library half: the configuration ([`config`]), the HTTP endpoints
//! ([`http`], the canary gate in [`api`]) and the wiring of `modelwatch run` ([`serve`]).

pub mod alerting;
pub mod api;
pub mod channels;
pub mod config;
pub mod demo;
pub mod history;
pub mod http;
pub mod judging;
pub mod serve;
