//! The registry client against a tiny HTTP server started by the test on 127.0.0.1:0: id 7 is
//! the contract's schema, 500 is a server error, anything else 404.
#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)
#![cfg(feature = "registry")]

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{Inf, confluent};
use modelwatch_codec::{
    DecodeError, Format, INFERENCE_LOG_AVSC, InferenceDecoder, RegistryResolver, ResolveError,
    SchemaResolver, inference_log_schema,
};

/// Serves registry answers on a background thread; returns the base URL and a request counter.
fn serve() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).map_or(true, |n| n == 0) || header == "\r\n" {
                    break;
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let path = request_line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let (status, body) = match path.as_str() {
                "/schemas/ids/7" => {
                    ("200 OK", serde_json::json!({ "schema": INFERENCE_LOG_AVSC }).to_string())
                }
                "/schemas/ids/500" => ("500 Internal Server Error", "{}".to_owned()),
                "/schemas/ids/13" => (
                    "200 OK",
                    r#"{"schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF"}"#.to_owned(),
                ),
                "/schemas/ids/14" => ("200 OK", "not json".to_owned()),
                _ => (
                    "404 Not Found",
                    r#"{"error_code": 40403, "message": "Schema not found"}"#.to_owned(),
                ),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (base, hits)
}

#[test]
fn registry_lookup_is_cached_and_errors_are_typed() {
    let (base, hits) = serve();
    let r = RegistryResolver::new(format!("{base}/"), Duration::from_secs(5));
    let s = r.by_id(7).unwrap();
    assert_eq!(
        modelwatch_codec::fingerprint(&s),
        modelwatch_codec::fingerprint(&inference_log_schema())
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    r.by_id(7).unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1, "second lookup must be served from the cache");

    assert!(matches!(r.by_id(8), Err(ResolveError::UnknownId(8))));
    assert!(matches!(r.by_id(500), Err(ResolveError::Status { id: 500, status: 500 })));
    assert!(matches!(r.by_id(13), Err(ResolveError::NotAvro { id: 13, .. })));
    assert!(matches!(r.by_id(14), Err(ResolveError::BadResponse { id: 14, .. })));
    assert!(matches!(r.by_fingerprint(42), Err(ResolveError::UnknownFingerprint(42))));
    let misses = hits.load(Ordering::SeqCst);

    // Through a decoder: id 7 decodes on the fast path; an unknown id is a typed error.
    let mut d = InferenceDecoder::with_resolver(Format::AvroConfluent, Arc::new(r));
    let inf = Inf::sample(0);
    let bytes = confluent(7, &inference_log_schema(), inf.value());
    assert_eq!(common::sorted(d.decode_one(&bytes).unwrap()), inf.record());
    let err = d.decode_one(&confluent(9, &inference_log_schema(), inf.value())).unwrap_err();
    assert!(matches!(err, DecodeError::Resolve(ResolveError::UnknownId(9))), "{err:?}");
    assert_eq!(hits.load(Ordering::SeqCst), misses + 1, "only id 9 was fetched");
}

#[test]
fn unreachable_registry_is_an_http_error() {
    // Bind then drop a listener: the port is (very likely) closed.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let r = RegistryResolver::new(format!("http://127.0.0.1:{port}"), Duration::from_secs(2));
    assert!(matches!(r.by_id(1), Err(ResolveError::Http { id: 1, .. })));
}
