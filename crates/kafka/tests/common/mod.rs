//! Helpers shared by the integration tests that talk to a real broker.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
};

/// A topic or group name no other test run uses.
pub(crate) fn fresh(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// The broker address, or `None` (with a note) when no broker is configured outside CI.
pub(crate) fn real_broker() -> Option<String> {
    match std::env::var("MODELWATCH_TEST_BROKERS") {
        Ok(b) if !b.trim().is_empty() => Some(b),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "MODELWATCH_TEST_BROKERS is not set but CI=true: start a broker \
                 (deploy/local/services.sh up) and export its address"
            );
            eprintln!(
                "note: skipping the real-broker test: MODELWATCH_TEST_BROKERS is not set \
                 (deploy/local/services.sh up prints it)"
            );
            None
        }
    }
}

/// Creates topics of `partitions` partitions each.
pub(crate) fn create_topics(brokers: &str, topics: &[&str], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let new: Vec<NewTopic<'_>> =
        topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1))).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in futures_executor::block_on(admin.create_topics(&new, &opts)).unwrap() {
        r.unwrap();
    }
}
