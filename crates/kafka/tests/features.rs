//! librdkafka is built with what production clusters need: TLS, SASL SCRAM over TLS, and the
//! compression codecs producers use. A client is only created here, nothing connects: librdkafka
//! refuses a property value its build does not support when the client is created.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rdkafka::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::BaseProducer;

fn consumer(props: &[(&str, &str)]) -> Result<BaseConsumer, String> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", "127.0.0.1:9").set("group.id", "features");
    for (k, v) in props {
        c.set(*k, *v);
    }
    c.create::<BaseConsumer>().map_err(|e| e.to_string())
}

#[test]
fn tls_and_sasl_scram_over_tls_are_built_in() {
    consumer(&[("security.protocol", "SSL")]).expect("TLS");
    consumer(&[
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanisms", "SCRAM-SHA-512"),
        ("sasl.username", "modelwatch"),
        ("sasl.password", "secret"),
    ])
    .expect("SASL_SSL with SCRAM");
    consumer(&[
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanisms", "PLAIN"),
        ("sasl.username", "modelwatch"),
        ("sasl.password", "secret"),
    ])
    .expect("SASL PLAIN");
    // An unknown mechanism is still refused: the checks above mean something.
    let err = consumer(&[
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanisms", "GSSAPI"),
        ("sasl.username", "modelwatch"),
        ("sasl.password", "secret"),
    ]);
    assert!(err.is_err(), "GSSAPI needs cyrus-sasl, which is not built in");
}

#[test]
fn gzip_lz4_and_snappy_are_built_in() {
    for codec in ["gzip", "lz4", "snappy"] {
        ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .set("compression.type", codec)
            .create::<BaseProducer>()
            .unwrap_or_else(|e| panic!("{codec}: {e}"));
    }
}
