//! Arbitrary bytes into both decoders in `auto` format, fast and generic Avro paths. Any panic,
//! or an allocation beyond libFuzzer's `-malloc_limit_mb`, is a bug.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use modelwatch_codec::{
    DirResolver, Format, InferenceDecoder, MetricDecoder, inference_log_schema, metric_event_schema,
};

fn resolver() -> Arc<DirResolver> {
    static R: OnceLock<Arc<DirResolver>> = OnceLock::new();
    R.get_or_init(|| {
        // Confluent ids 1 and 2: the contract's schemas, so framed seeds reach the decoders.
        let r = DirResolver::builtin()
            .with(Some(1), (*inference_log_schema()).clone())
            .and_then(|r| r.with(Some(2), (*metric_event_schema()).clone()))
            .unwrap_or_default();
        Arc::new(r)
    })
    .clone()
}

fuzz_target!(|data: &[u8]| {
    for fast in [true, false] {
        let mut i = InferenceDecoder::with_resolver(Format::Auto, resolver());
        i.set_fast_path(fast);
        i.decode(data, |r| {
            std::hint::black_box(r.is_ok());
        });
        let mut m = MetricDecoder::with_resolver(Format::Auto, resolver());
        m.set_fast_path(fast);
        m.decode(data, |r| {
            std::hint::black_box(r.is_ok());
        });
    }
});
