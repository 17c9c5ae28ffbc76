//! modelwatch-kafka: the Kafka side of modelwatch.
//!
//! It holds the consumer side and the traffic generator behind `modelwatch gen`:
//! - [`source`]: the consumer-group source (own poll thread, bounded channel, offsets committed
//!   only by the caller, resume offsets from the checkpoint on assignment);
//! - [`dead_letter`]: produces unprocessable records, byte for byte, to the dead-letter topic;
//! - [`scenario`]: the traffic model's configuration (models, canaries, distributions, incidents);
//! - [`traffic`]: the pure, deterministic event stream of a validated [`Scenario`];
//! - [`encode`]: events to message values (bare Avro, Confluent framing, single-object, JSON);
//! - [`run`]: produces a scenario to Kafka with delivery tracking and reports what was acked.
//!
//! ```
//! use modelwatch_kafka::{Encoder, Encoding, Messages, Scenario, ScenarioConfig, SchemaIds};
//!
//! let config = ScenarioConfig { seed: 7, ..ScenarioConfig::default() };
//! let scenario = Scenario::new(&config, 1_779_000_000_000).unwrap();
//! let encoder = Encoder::new(Encoding::AvroConfluent, SchemaIds::default());
//! let first: Vec<_> = Messages::new(scenario.events(), encoder).take(3).collect();
//! assert!(first.iter().all(|m| m.as_ref().unwrap().payload[0] == 0x00));
//! ```

pub mod dead_letter;
pub mod encode;
mod produce;
pub mod scenario;
pub mod source;
pub mod traffic;

pub use dead_letter::{DeadLetterError, DeadLetterOptions, DeadLetterProducer, DeadLetterStats};
pub use encode::{EncodeError, Encoder, Encoding, Message, Messages, SchemaIds, TopicKind};
pub use produce::{Acks, Compression, GenError, GenOptions, GenReport, Pacing, StopReason, run};
pub use scenario::{Incident, IncidentEffect, ScenarioConfig};
pub use source::{
    Batch, OffsetReset, Record, RecordRef, Revoked, Source, SourceError, SourceEvent,
    SourceOptions, WatermarkProbe,
};
pub use traffic::{Event, Scenario, ScenarioError};
