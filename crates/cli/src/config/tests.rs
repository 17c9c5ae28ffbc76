//! Configuration tests: every bad value names its key; secrets, overrides, the example file.

use modelwatch_core::CoreConfig;
use toml::{Table, Value};

use super::{overrides::OVERRIDABLE, *};

const MINIMAL: &str = r#"
[kafka]
brokers = ["localhost:9092"]
inference_topics = ["inference"]

[clickhouse]
url = "http://localhost:8123"
"#;

const EXAMPLE: &str = include_str!("../../../../deploy/modelwatch.example.toml");

fn no_env() -> Environment {
    Environment::default()
}

/// Two valid rules and the channel they name, for [`with`].
const ALERTS: &str = r#"
[[rules]]
name = "r0"
metric = "latency_p99_ms"
op = ">"
threshold = 250.0
channels = ["hook"]

[[rules]]
name = "r1"
metric = "latency_p99_ms"
relative_to = "baseline"
op = ">"
threshold = 1.5
channels = ["hook"]

[channels.hook]
type = "webhook"
url = "http://127.0.0.1:9/hook"
"#;

/// `MINIMAL` plus two canary entries and `[alerts]` with two rules and a channel, with `edits`
/// applied: (dotted path, TOML literal or `"<remove>"`). Paths are `section.key`,
/// `canary.INDEX.key`, `alerts.rules.INDEX.key` or `alerts.channels.NAME.key`.
fn with(edits: &[(&str, &str)]) -> String {
    let mut doc: Table = MINIMAL.parse().unwrap();
    doc.insert("alerts".into(), Value::Table(ALERTS.parse().unwrap()));
    let canaries: Value = r#"v = [
        { model = "m1", baseline = "v1", canary = "v2", expected_share = 0.1 },
        { model = "m2", baseline = "v1", canary = "v2" },
    ]"#
    .parse::<Table>()
    .unwrap()
    .remove("v")
    .unwrap();
    doc.insert("canary".into(), canaries);
    for (path, literal) in edits {
        let parts: Vec<&str> = path.split('.').collect();
        let (last, parents) = parts.split_last().unwrap();
        let table = match parents {
            [section] => {
                doc.entry(*section).or_insert_with(|| Value::Table(Table::new())).as_table_mut()
            }
            ["canary", i] => {
                doc["canary"].as_array_mut().unwrap()[i.parse::<usize>().unwrap()].as_table_mut()
            }
            ["alerts", "rules", i] => doc["alerts"]["rules"].as_array_mut().unwrap()
                [i.parse::<usize>().unwrap()]
            .as_table_mut(),
            ["alerts", "channels", name] => {
                doc["alerts"]["channels"].get_mut(*name).unwrap().as_table_mut()
            }
            [] => Some(&mut doc),
            _ => None,
        }
        .unwrap();
        if *literal == "<remove>" {
            table.remove(*last);
        } else {
            let v = format!("v = {literal}").parse::<Table>().unwrap().remove("v").unwrap();
            table.insert((*last).to_owned(), v);
        }
    }
    toml::to_string(&doc).unwrap()
}

fn error_of(text: &str, env: &Environment) -> ConfigError {
    match Config::from_toml_str(text, env) {
        Ok(c) => panic!("accepted: {c:?}\n{text}"),
        Err(e) => e,
    }
}

/// The error and its sources, as the binary prints it.
fn chain(e: &ConfigError) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[test]
fn minimal_config_is_valid_and_core_defaults_apply() {
    let c = Config::from_toml_str(MINIMAL, &no_env()).unwrap();
    assert_eq!(*c.core(), CoreConfig::default());
    assert_eq!(c.kafka().group_id, "modelwatch");
    assert_eq!(c.kafka().format, Format::Auto);
    assert_eq!(c.kafka().auto_offset_reset, OffsetReset::Earliest);
    assert!(c.kafka().metric_topics.is_empty());
    assert_eq!(c.clickhouse().database, "modelwatch");
    assert_eq!(c.clickhouse().user, "default");
    assert!(c.clickhouse().password.is_empty());
    assert_eq!(c.http().listen, "0.0.0.0:9464".parse::<SocketAddr>().unwrap());
    assert!(c.http().enabled && c.http().auth_token.is_none());
    assert!(c.canaries().is_empty());
}

#[test]
fn every_bad_value_names_its_key() {
    #[rustfmt::skip]
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("kafka.brokers", "[]")], "`kafka.brokers` is required"),
        (&[("kafka.brokers", "<remove>")], "`kafka.brokers` is required"),
        (&[("kafka.brokers", r#"["ok:9092", "host:port"]"#)], "`kafka.brokers[1]`"),
        (&[("kafka.brokers", r#""localhost:9092""#)], "`kafka.brokers`: invalid type"),
        (&[("kafka.group_id", r#""""#)], "`kafka.group_id`"),
        (&[("kafka.inference_topics", "[]")], "`kafka.inference_topics` is required"),
        (&[("kafka.inference_topics", r#"["a b"]"#)], "`kafka.inference_topics[0]`"),
        (&[("kafka.inference_topics", r#"["a", "a"]"#)], "`kafka.inference_topics` lists"),
        (&[("kafka.metric_topics", r#"["m", "inference"]"#)], "`kafka.metric_topics`"),
        (&[("kafka.metric_topics", r#"["m/x"]"#)], "`kafka.metric_topics[0]`"),
        (&[("kafka.format", r#""xml""#)], "`kafka.format`: unknown variant `xml`"),
        (&[("kafka.format", r#""avro-confluent""#)], "`kafka.format`"),
        (&[("kafka.auto_offset_reset", r#""smallest""#)], "`kafka.auto_offset_reset`"),
        (&[("kafka.dead_letter_topic", r#""inference""#)], "`kafka.dead_letter_topic`"),
        (&[("kafka.dead_letter_topic", r#""..""#)], "`kafka.dead_letter_topic`"),
        (&[("kafka.schema_registry_url", r#""ftp://r""#)], "`kafka.schema_registry_url`"),
        (&[("kafka.schema_dir", r#""""#)], "`kafka.schema_dir`"),
        (&[("kafka.properties", r#"{ "group.id" = "x" }"#)], "`kafka.properties.\"group.id\"`"),
        (&[("kafka.properties", r#"{ "enable.auto.commit" = "true" }"#)], "enable.auto.commit"),
        (&[("kafka.properties", r#"{ "linger.ms" = 5 }"#)], "`kafka.properties.linger.ms`"),
        (&[("clickhouse.url", "<remove>")], "`clickhouse.url` is required"),
        (&[("clickhouse.url", r#""tcp://localhost:9000""#)], "`clickhouse.url` must be an http"),
        (&[("clickhouse.url", r#""localhost:8123""#)], "`clickhouse.url`"),
        (&[("clickhouse.url", r#""not a url""#)], "`clickhouse.url` is not a valid url"),
        (&[("clickhouse.database", r#""my-db""#)], "`clickhouse.database`"),
        (&[("clickhouse.database", concat!("\"", "dddddddddddddddddddddddddddddddd", "ddddddddddddddddddddddddddddddddd", "\""))], "`clickhouse.database`"),
        (&[("clickhouse.url", r#""http://u:secret@localhost:8123""#)], "`clickhouse.url` must not carry credentials"),
        (&[("clickhouse.user", r#""""#)], "`clickhouse.user`"),
        (&[("clickhouse.password", "42")], "`clickhouse.password`: invalid type"),
        (&[("windows.slide", r#""7s""#)], "`windows.slide`"),
        (&[("windows.slide", r#""0s""#)], "`windows.slide` must be greater than zero"),
        (&[("windows.window", r#""5 parsecs""#)], "`windows.window`: invalid duration"),
        (&[("windows.window", r#""2h""#)], "`windows.window` / `windows.slide`"),
        (&[("windows.allowed_lateness", "5")], "`windows.allowed_lateness`: invalid type"),
        (&[("windows.max_future_skew", r#""1500us""#)], "`windows.max_future_skew`"),
        (&[("windows.idle_timeout", r#""0s""#)], "`windows.idle_timeout`"),
        (&[("windows.backlog_idle_timeout", r#""10s""#)], "`windows.backlog_idle_timeout`"),
        (&[("windows.idle_timeout", r#""5m""#)], "`windows.backlog_idle_timeout`"),
        (&[("drift.edge_samples", "-1")], "`drift.edge_samples`"),
        (&[("drift.edge_samples", "5")], "`drift.edge_samples`"),
        (&[("drift.bins", "1")], "`drift.bins`"),
        (&[("drift.top_k", "70000")], "`drift.top_k`"),
        (&[("drift.epsilon", "0.5")], "`drift.epsilon`"),
        (&[("drift.epsilon", "nan")], "`drift.epsilon`"),
        (&[("drift.reference_period", r#""0s""#)], "`drift.reference_period`"),
        (&[("limits.max_models", "0")], "`limits.max_models`"),
        (&[("limits.max_versions_per_model", "0")], "`limits.max_versions_per_model`"),
        (&[("limits.max_features", "100000")], "`limits.max_features`"),
        (&[("limits.idle_ttl", r#""0s""#)], "`limits.idle_ttl`"),
        (&[("latency.significant_digits", "6")], "`latency.significant_digits`"),
        (&[("http.listen", r#""localhost""#)], "`http.listen`"),
        (&[("http.listen", r#""0.0.0.0:99999""#)], "`http.listen`"),
        (&[("http.auth_token", r#""short""#)], "`http.auth_token`"),
        (&[("http.enabled", r#""yes""#)], "`http.enabled`"),
        (&[("canary.1.expected_share", "1.0")], "`canary[1].expected_share`"),
        (&[("canary.0.expected_share", "0")], "`canary[0].expected_share`"),
        (&[("canary.0.expected_share", "nan")], "`canary[0].expected_share`"),
        (&[("canary.0.canary", r#""v1""#)], "`canary[0]`: `baseline` and `canary`"),
        (&[("canary.1.model", r#""m1""#)], "`canary[1].model`: model \"m1\" already"),
        (&[("canary.0.model", r#""""#)], "`canary[0].model`"),
        (&[("canary.1.baseline", "<remove>")], "`canary[1]`: missing field `baseline`"),
        (&[("canary", "{ model = \"m\" }")], "`canary`: invalid type"),
        (&[("alerts.group_wait", r#""soon""#)], "`alerts.group_wait`: invalid duration"),
        (&[("alerts.group_interval", r#""500ms""#)], "`alerts.group_interval` is \"500ms\"; expected at least 1s"),
        (&[("alerts.repeat_interval", r#""1500us""#)], "`alerts.repeat_interval` must be a whole number of milliseconds"),
        (&[("alerts.max_notification_age", "900")], "`alerts.max_notification_age`: invalid type"),
        (&[("alerts.external_url", r#""ftp://x""#)], "`alerts.external_url` must be an http or https url"),
        (&[("alerts.rules.1.channels", r#"["hook", "pager"]"#)], "`alerts.rules[1].channels[1]` names the channel \"pager\", which is not configured"),
        (&[("alerts.channels", "{}")], "`alerts.rules[0].channels[0]` names the channel \"hook\""),
        (&[("alerts.rules.0.name", r#""r1""#)], "`alerts.rules[1].name`: rule \"r1\" is already defined by `alerts.rules[0]`"),
        (&[("alerts.rules.0.threshold", "<remove>")], "`alerts.rules[0].threshold` is required"),
        (&[("alerts.rules.1.metric", r#""latency_p98_ms""#)], "`alerts.rules[1].metric`"),
        (&[("alerts.rules.0.op", r#""=>""#)], "`alerts.rules[0].op`: unknown variant `=>`"),
        (&[("alerts.rules.0.fro", r#""1m""#)], "`alerts.rules[0].fro`: unknown field `fro`"),
        (&[("alerts.rules.0.for", r#""a while""#)], "`alerts.rules[0].for`: invalid duration"),
        (&[("alerts.rules.0.annotations", r#"{ summary = "{{nope}}" }"#)], "`alerts.rules[0].annotations.summary` uses the unknown placeholder {{nope}}"),
        (&[("alerts.rules.1.compare", r#""quotient""#)], "`alerts.rules[1].compare`: unknown variant"),
        (&[("alerts.silences", r#"[{ matchers = [{ name = "model", value = "m1" }], ends_at = "tomorrow" }]"#)], "`alerts.silences[0].ends_at`: \"tomorrow\" is not an RFC 3339"),
        (&[("alerts.silences", r#"[{ matchers = [], ends_at = "2030-01-01T00:00:00Z" }]"#)], "`alerts.silences[0]`"),
        (&[("alerts.silences", r#"[{ matchers = [{ name = "model", value = "m1" }], starts_at = "2030-01-02T00:00:00Z", ends_at = "2030-01-01T00:00:00Z" }]"#)], "`alerts.silences[0]`"),
        (&[("alerts.silences", r#"[{ matchers = [{ name = "model", value = "m1" }] }]"#)], "`alerts.silences[0]`: missing field `ends_at`"),
        (&[("alerts.channels.hook.type", r#""pager""#)], "`alerts.channels.hook"),
        (&[("alerts.channels.hook.type", "<remove>")], "`alerts.channels.hook"),
        (&[("alerts.channels.hook.url", r#""ftp://x""#)], "`alerts.channels.hook`: `url`: 'ftp://x' is not an http(s) URL"),
        (&[("alerts.channels.hook.url", "<remove>")], "`alerts.channels.hook`: missing field `url`"),
        (&[("alerts.channels.hook.urll", r#""http://h/""#)], "unknown field `urll`"),
        (&[("alerts.channels.hook.timeout", r#""0s""#)], "`alerts.channels.hook`: `timeout` must be longer than zero"),
        (&[("alerts.channels.hook.headers", r#"{ "Content-Type" = "text/plain" }"#)], "`alerts.channels.hook`: `headers`"),
        (&[("alerts.retry", "{ max_attempts = 0 }")], "`alerts.retry`"),
        (&[("alerts.retry", "{ attempts = 3 }")], "`alerts.retry"),
    ];
    assert!(cases.len() >= 15);
    for (edits, expected) in cases {
        let text = with(edits);
        let err = chain(&error_of(&text, &no_env()));
        assert!(err.contains(expected), "{edits:?}: expected {expected:?} in:\n{err}");
    }
}

#[test]
fn cross_field_checks_have_named_variants() {
    let e = |edits: &[(&str, &str)]| error_of(&with(edits), &no_env());
    assert!(matches!(
        e(&[("windows.slide", r#""7s""#)]),
        ConfigError::Core(modelwatch_core::config::ConfigError::WindowNotMultipleOfSlide { .. })
    ));
    assert!(matches!(
        e(&[("canary.0.canary", r#""v1""#)]),
        ConfigError::CanarySameVersion { index: 0, .. }
    ));
    assert!(matches!(
        e(&[("canary.1.model", r#""m1""#)]),
        ConfigError::DuplicateCanary { index: 1, first: 0, .. }
    ));
    assert!(matches!(
        e(&[("clickhouse.url", r#""tcp://h:9000""#)]),
        ConfigError::UrlScheme { key: "clickhouse.url", .. }
    ));
    assert!(matches!(e(&[("http.listen", r#""nope""#)]), ConfigError::ListenAddress { .. }));
    assert!(matches!(
        e(&[("kafka.metric_topics", r#"["inference"]"#)]),
        ConfigError::TopicInBothLists { .. }
    ));
    assert!(matches!(
        e(&[("kafka.dead_letter_topic", r#""inference""#)]),
        ConfigError::DeadLetterIsInput { .. }
    ));
    assert!(matches!(
        e(&[("kafka.format", r#""avro-confluent""#)]),
        ConfigError::ConfluentWithoutSchemas
    ));
    // Confluent framing is fine with a schema directory.
    Config::from_toml_str(
        &with(&[("kafka.format", r#""avro-confluent""#), ("kafka.schema_dir", r#""s""#)]),
        &no_env(),
    )
    .unwrap();
}

#[test]
fn unknown_keys_are_rejected_with_their_section() {
    let cases = [
        (format!("{MINIMAL}\n[kafak]\nbrokers = []\n"), "kafak"),
        (MINIMAL.replace("[kafka]\n", "[kafka]\nbrokerz = []\n"), "brokerz"),
        (format!("{MINIMAL}\n[windows]\nslid = \"10s\"\n"), "slid"),
        (format!("{MINIMAL}\n[http]\nport = 80\n"), "port"),
        (
            format!("{MINIMAL}\n[[canary]]\nmodle = \"m\"\nbaseline = \"a\"\ncanary = \"b\"\n"),
            "modle",
        ),
    ];
    for (text, key) in cases {
        let err = error_of(&text, &no_env());
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Invalid { .. }), "{msg}");
        assert!(msg.contains(&format!("unknown field `{key}`")), "{msg}");
        let section = match key {
            "kafak" => "`kafak`",
            "brokerz" => "`kafka.brokerz`",
            "slid" => "`windows.slid`",
            "port" => "`http.port`",
            _ => "`canary[0].modle`",
        };
        assert!(msg.starts_with(section), "{msg}");
    }
}

#[test]
fn syntax_errors_are_reported() {
    let err = error_of("[kafka\nbrokers = 1", &no_env());
    assert!(matches!(err, ConfigError::Syntax(_)), "{err}");
}

#[test]
fn variables_are_substituted_anywhere() {
    let text = format!(
        "{MINIMAL}password = \"${{CH_PASS}}\"\nuser = \"u-${{WHO}}-x\"\n\
         [kafka.properties]\n\"sasl.password\" = \"${{KAFKA_PASS}}\"\n\
         [[canary]]\nmodel = \"${{MODEL}}\"\nbaseline = \"a\"\ncanary = \"b\"\n"
    )
    .replace("inference_topics = [\"inference\"]", "inference_topics = [\"${TOPIC}\", \"x\"]");
    let env: Environment = [
        ("CH_PASS", "s3cret"),
        ("WHO", "me"),
        ("KAFKA_PASS", "k-s3cret"),
        ("MODEL", "fraud"),
        ("TOPIC", "logs"),
    ]
    .into_iter()
    .collect();
    let c = Config::from_toml_str(&text, &env).unwrap();
    assert_eq!(c.clickhouse().password.expose(), "s3cret");
    assert_eq!(c.clickhouse().user, "u-me-x");
    assert_eq!(c.kafka().properties["sasl.password"], "k-s3cret");
    assert_eq!(c.canaries()[0].model, "fraud");
    assert_eq!(c.kafka().inference_topics, ["logs", "x"]);
    // Secrets stay out of debug output and of the summary.
    let shown = format!("{c:?}\n{}", c.summary());
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn a_missing_variable_names_it_and_the_key() {
    let text = format!("{MINIMAL}\n[kafka.properties]\n\"sasl.password\" = \"${{KAFKA_PASS}}\"\n");
    let err = error_of(&text, &no_env());
    assert!(
        matches!(&err, ConfigError::MissingVariable { key, variable }
            if key == "kafka.properties.\"sasl.password\"" && variable == "KAFKA_PASS"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "`kafka.properties.\"sasl.password\"` refers to environment variable `KAFKA_PASS`, \
         which is not set"
    );
    let err = error_of(&with(&[("canary.1.canary", r#""${NEXT}""#)]), &no_env());
    assert!(err.to_string().contains("`canary[1].canary`"), "{err}");
    let err = error_of(&with(&[("kafka.brokers", r#"["a:1", "${B}"]"#)]), &no_env());
    assert!(err.to_string().contains("`kafka.brokers[1]`"), "{err}");
}

#[test]
fn double_dollar_escapes_a_reference() {
    let text = format!("{MINIMAL}password = \"$${{NOT_A_VAR}}$x\"\n");
    let c = Config::from_toml_str(&text, &no_env()).unwrap();
    assert_eq!(c.clickhouse().password.expose(), "${NOT_A_VAR}$x");
    let err = error_of(&format!("{MINIMAL}password = \"${{oops\"\n"), &no_env());
    assert!(matches!(err, ConfigError::BadReference { .. }), "{err}");
    assert!(err.to_string().contains("`clickhouse.password`"), "{err}");
}

#[test]
fn environment_overrides_scalar_keys() {
    let env: Environment = [
        ("MODELWATCH_KAFKA_BROKERS", "b1:9092, b2:9093"),
        ("MODELWATCH_KAFKA_METRIC_TOPICS", "gpu,queue"),
        ("MODELWATCH_DRIFT_BINS", "20"),
        ("MODELWATCH_DRIFT_EPSILON", "0.001"),
        ("MODELWATCH_WINDOWS_SLIDE", "5s"),
        ("MODELWATCH_HTTP_ENABLED", "false"),
        ("MODELWATCH_CLICKHOUSE_PASSWORD", "${NOT_EXPANDED}"),
        ("MODELWATCH_KAFKA_FORMAT", "json"),
        ("MODELWATCH_UNRELATED_THING", "left alone"),
    ]
    .into_iter()
    .collect();
    let c = Config::from_toml_str(MINIMAL, &env).unwrap();
    assert_eq!(c.kafka().brokers, ["b1:9092", "b2:9093"]);
    assert_eq!(c.kafka().metric_topics, ["gpu", "queue"]);
    assert_eq!(c.core().drift.bins(), 20);
    assert_eq!(c.core().drift.epsilon(), 0.001);
    assert_eq!(c.core().windows.slide_ms(), 5_000);
    assert_eq!(c.core().windows.panes_per_window(), 60);
    assert!(!c.http().enabled);
    assert_eq!(c.clickhouse().password.expose(), "${NOT_EXPANDED}");
    assert_eq!(c.kafka().format, Format::Json);

    // An overridden value's `${VAR}` needs no variable.
    let env: Environment = [("MODELWATCH_CLICKHOUSE_PASSWORD", "from-env")].into_iter().collect();
    let text = format!("{MINIMAL}password = \"${{UNSET_PASSWORD}}\"\n");
    let c = Config::from_toml_str(&text, &env).unwrap();
    assert_eq!(c.clickhouse().password.expose(), "from-env");

    // A required key may come from the environment alone.
    let env: Environment = [("MODELWATCH_CLICKHOUSE_URL", "https://ch:8443")].into_iter().collect();
    let text = MINIMAL.replace("url = \"http://localhost:8123\"", "");
    let c = Config::from_toml_str(&text, &env).unwrap();
    assert_eq!(c.clickhouse().url.as_str(), "https://ch:8443/");
}

#[test]
fn bad_overrides_name_the_variable_and_the_key() {
    let one = |k: &str, v: &str| -> Environment { [(k, v)].into_iter().collect() };
    let err = error_of(MINIMAL, &one("MODELWATCH_DRIFT_BINS", "many"));
    assert_eq!(
        err.to_string(),
        "environment variable `MODELWATCH_DRIFT_BINS` (overriding `drift.bins`) must be an integer"
    );
    let err = error_of(MINIMAL, &one("MODELWATCH_WINDOWS_SLIDE", "soon"));
    assert!(err.to_string().contains("`windows.slide`"), "{err}");
    // Parsed fine, refused by validation: the key is named.
    let err = error_of(MINIMAL, &one("MODELWATCH_WINDOWS_SLIDE", "7s"));
    assert!(err.to_string().contains("`windows.slide`"), "{err}");
    let err = error_of(MINIMAL, &one("MODELWATCH_DRIFT_BINS", "70000"));
    assert!(err.to_string().contains("`drift.bins`"), "{err}");
}

/// `[[canary]]` entries and `[kafka.properties]` cannot be overridden: an attempt is an error,
/// not silently ignored, and so is a misspelt key.
#[test]
fn canaries_and_properties_are_not_overridable() {
    for variable in [
        "MODELWATCH_CANARY_MODEL",
        "MODELWATCH_CANARY_0_EXPECTED_SHARE",
        "MODELWATCH_KAFKA_PROPERTIES_SASL_PASSWORD",
        "MODELWATCH_KAFKA_BROKER",
    ] {
        let env: Environment = [(variable, "x")].into_iter().collect();
        let err = error_of(&with(&[]), &env);
        assert!(
            matches!(&err, ConfigError::UnknownOverride { variable: v, .. } if v == variable),
            "{variable}: {err}"
        );
    }
}

/// The example's alerting block, enabled: its lines between the markers without their `# `.
fn example_with_alerting() -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in EXAMPLE.lines() {
        if line.starts_with("# BEGIN example alerting") {
            inside = true;
        } else if line.starts_with("# END example alerting") {
            inside = false;
        } else if inside {
            out.push_str(line.strip_prefix("# ").unwrap_or(line.trim_start_matches('#')));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[test]
fn the_example_alerting_block_validates_when_enabled() {
    let c = Config::from_toml_str(EXAMPLE, &no_env()).unwrap();
    assert!(!c.alerts().enabled(), "the example sends nothing unless enabled");
    let env: Environment =
        [("ALERT_WEBHOOK_SECRET", "s3cret"), ("SMTP_PASSWORD", "pw")].into_iter().collect();
    let c = Config::from_toml_str(&example_with_alerting(), &env).unwrap();
    let a = c.alerts();
    assert_eq!(a.rules.len(), 2);
    assert_eq!(a.rules[0].name(), "canary_latency_regression");
    assert_eq!(a.channels.keys().collect::<Vec<_>>(), ["oncall", "team-mail"]);
    assert_eq!(a.silences.len(), 1);
    assert_eq!(a.scheduler.group_wait, std::time::Duration::from_secs(30));
    assert_eq!(a.external_url, "http://localhost:3000/d/modelwatch");
}

#[test]
fn the_example_file_validates() {
    let c = Config::from_toml_str(EXAMPLE, &no_env()).unwrap();
    assert_eq!(*c.core(), CoreConfig::default(), "the example shows the defaults");
    assert_eq!(c.canaries().len(), 2);
    assert_eq!(c.canary_of("fraud-detector").unwrap().expected_share, Some(0.1));
    // The commented-out token, enabled, validates with its variable set.
    let text = EXAMPLE.replace("# auth_token = ", "auth_token = ");
    let env: Environment = [("API_TOKEN", "0123456789abcdef")].into_iter().collect();
    let c = Config::from_toml_str(&text, &env).unwrap();
    assert_eq!(c.http().auth_token.as_ref().unwrap().expose(), "0123456789abcdef");
}

/// The example shows every key, and every scalar key of a section is overridable: the override
/// table cannot drift from the structs (the example is checked against them above).
#[test]
fn the_example_and_the_override_table_cover_every_key() {
    let text = EXAMPLE.replace("# auth_token = ", "auth_token = ");
    let doc: Table = text.parse().unwrap();
    let mut in_example = Vec::new();
    for (section, value) in &doc {
        if section == "canary" {
            continue;
        }
        for (key, value) in value.as_table().unwrap() {
            if !value.is_table() {
                in_example.push((section.clone(), key.clone()));
            }
        }
    }
    let mut overridable: Vec<_> =
        OVERRIDABLE.iter().map(|(s, k, _)| ((*s).to_owned(), (*k).to_owned())).collect();
    in_example.sort();
    overridable.sort();
    assert_eq!(in_example, overridable);
    // Every field of ConfigFile with a default is written out by serialising the defaults.
    let defaults: Table =
        Value::try_from(ConfigFile::default()).unwrap().as_table().unwrap().clone();
    for (section, key, _) in OVERRIDABLE {
        let optional = matches!(
            (*section, *key),
            ("kafka", "dead_letter_topic" | "schema_registry_url" | "schema_dir")
                | ("clickhouse", "url")
                | ("http", "auth_token")
                | ("alerts", "external_url")
        );
        assert_eq!(defaults[*section].get(*key).is_some(), !optional, "{section}.{key}");
    }
}

#[test]
fn every_overridable_key_accepts_a_value_of_its_kind() {
    use overrides::KeyKind;
    for &(section, key, kind) in OVERRIDABLE {
        let value = match (section, key, kind) {
            (_, _, KeyKind::StringList) => "t1,t2",
            (_, _, KeyKind::Integer) => "5",
            (_, _, KeyKind::Float) => "0.01",
            (_, _, KeyKind::Boolean) => "true",
            (_, _, KeyKind::Duration) => "5m",
            (_, "format", _) => "json",
            (_, "auto_offset_reset", _) => "latest",
            (_, "url" | "schema_registry_url", _) => "http://h:1",
            (_, "listen", _) => "127.0.0.1:1",
            _ => "a_valid_name_and_token",
        };
        let variable = overrides::variable_name(section, key);
        let env: Environment = [(variable.as_str(), value)].into_iter().collect();
        let parsed =
            ConfigFile::parse(MINIMAL, &env).unwrap_or_else(|e| panic!("{variable}={value}: {e}"));
        let shown = Value::try_from(&parsed).unwrap();
        assert!(shown[section].get(key).is_some(), "{variable} did not set {section}.{key}");
    }
}

#[test]
fn defaults_round_trip_through_toml() {
    let text = toml::to_string(&ConfigFile::default()).unwrap();
    assert_eq!(ConfigFile::parse(&text, &no_env()).unwrap(), ConfigFile::default());
}

#[test]
fn the_deploy_configurations_are_valid() {
    let env: Environment = [
        ("CLICKHOUSE_PASSWORD", "pw"),
        ("MODELWATCH_API_TOKEN", "a-token-of-at-least-16-chars"),
        ("ALERT_WEBHOOK_SECRET", "s3cret"),
        ("SMTP_PASSWORD", "pw"),
    ]
    .into_iter()
    .collect();
    for (name, text) in [
        ("compose", include_str!("../../../../deploy/compose/modelwatch.toml")),
        ("kubernetes", include_str!("../../../../deploy/kubernetes/modelwatch.toml")),
    ] {
        let c = Config::from_toml_str(text, &env).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert!(!c.canaries().is_empty(), "{name}: the canary gate needs a pair");
        assert!(c.alerts().enabled(), "{name}: alerting is set up");
        assert!(c.http().auth_token.is_some(), "{name}: the API is protected");
    }
}
