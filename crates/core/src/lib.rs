//! modelwatch-core: the pure domain logic of modelwatch.
//!
//! No I/O, no async runtime, and no clock: every function that depends on time takes it as an
//! argument, so the same input always gives the same output (which is what makes replay after a
//! crash produce identical rows).

pub mod drift;
pub mod event;
