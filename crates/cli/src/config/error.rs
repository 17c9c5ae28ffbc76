//! Why a configuration was refused. Every variant names the key it is about, as spelled in the
//! file (`windows.slide`, `canary[1].expected_share`, `kafka.properties."group.id"`); `canary`
//! indices count `[[canary]]` entries from 0.

use std::path::PathBuf;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("failed to read configuration file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("the configuration is not valid toml")]
    Syntax(#[source] toml::de::Error),
    /// A `${VAR}` reference names a variable that is not set.
    #[error("`{key}` refers to environment variable `{variable}`, which is not set")]
    MissingVariable {
        /// The key whose value holds the reference.
        key: String,
        /// The variable.
        variable: String,
    },
    /// A `${` that does not start a valid reference (write `$${` for a literal `${`).
    #[error(
        "`{key}` holds a malformed `${{...}}` reference: {reason} (write `$${{` for a literal `${{`)"
    )]
    BadReference {
        /// The key.
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A `MODELWATCH_<SECTION>_...` variable that names no overridable key of the section.
    #[error(
        "environment variable `{variable}` overrides no key of `[{section}]` (only scalar keys and string lists of a section can be overridden; `[[canary]]` entries and `[kafka.properties]` cannot)"
    )]
    UnknownOverride {
        /// The variable.
        variable: String,
        /// The section its name starts with.
        section: String,
    },
    /// An override variable whose value does not parse as the key's type.
    #[error("environment variable `{variable}` (overriding `{key}`) must be {expected}")]
    BadOverride {
        /// The variable.
        variable: String,
        /// The key it overrides.
        key: String,
        /// What the key's type expects.
        expected: &'static str,
    },
    /// A value of the wrong type, an unknown key or an unknown enum value.
    #[error("`{key}`: {message}")]
    Invalid {
        /// The key (for an unknown key: the table that holds it, and the message names it).
        key: String,
        /// What the parser said.
        message: String,
    },
    /// A key that has no default was not given.
    #[error("`{key}` is required")]
    Required {
        /// The key.
        key: &'static str,
    },
    /// A string that must not be empty is empty.
    #[error("`{key}` must not be empty")]
    Empty {
        /// The key.
        key: String,
    },
    /// A broker address that is not `host` or `host:port`.
    #[error("`{key}` must be `host:port` (or `host`), got {value:?}")]
    Broker {
        /// The key, e.g. `kafka.brokers[1]`.
        key: String,
        /// The value given.
        value: String,
    },
    /// A Kafka topic name with characters Kafka refuses or of a bad length.
    #[error(
        "`{key}` is not a valid kafka topic name ({value:?}): 1 to 249 of `a-z A-Z 0-9 . _ -`, not `.` or `..`"
    )]
    TopicName {
        /// The key.
        key: String,
        /// The value given.
        value: String,
    },
    /// A topic listed twice in one list.
    #[error("`{key}` lists topic {topic:?} twice")]
    DuplicateTopic {
        /// The list.
        key: &'static str,
        /// The topic.
        topic: String,
    },
    /// A topic listed both as an inference topic and as a metric topic.
    #[error(
        "topic {topic:?} is in both `kafka.inference_topics` and `kafka.metric_topics`; a topic carries one record type"
    )]
    TopicInBothLists {
        /// The topic.
        topic: String,
    },
    /// The dead-letter topic is also an input topic, which would feed rejects back in.
    #[error("`kafka.dead_letter_topic` ({topic:?}) must not be one of the input topics")]
    DeadLetterIsInput {
        /// The topic.
        topic: String,
    },
    /// Confluent framing without a way to resolve schema ids.
    #[error(
        "`kafka.format` = \"avro-confluent\" needs `kafka.schema_registry_url` or `kafka.schema_dir` to resolve schema ids"
    )]
    ConfluentWithoutSchemas,
    /// A librdkafka property that modelwatch sets itself.
    #[error("`kafka.properties.{property:?}` is set by modelwatch; {instead}")]
    ReservedProperty {
        /// The property.
        property: String,
        /// What to do instead.
        instead: &'static str,
    },
    /// A URL that does not parse.
    #[error("`{key}` is not a valid url")]
    Url {
        /// The key.
        key: &'static str,
        /// Why.
        #[source]
        source: url::ParseError,
    },
    /// A URL whose scheme is not `http` or `https`.
    #[error("`{key}` must be an http or https url, not {scheme:?}")]
    UrlScheme {
        /// The key.
        key: &'static str,
        /// The scheme given.
        scheme: String,
    },
    /// A database name that is not a plain identifier.
    #[error(
        "`clickhouse.database` must be 1 to 64 letters, digits and `_`, not starting with a digit; got {value:?}"
    )]
    DatabaseName {
        /// The value given.
        value: String,
    },
    /// A URL with a user or password in it.
    #[error("`{key}` must not carry credentials: use `clickhouse.user` and `clickhouse.password`")]
    UrlCredentials {
        /// The configuration key.
        key: &'static str,
    },
    /// `http.listen` is not `ip:port`.
    #[error("`http.listen` must be a socket address `ip:port`, got {value:?}")]
    ListenAddress {
        /// The value given.
        value: String,
        /// Why.
        #[source]
        source: std::net::AddrParseError,
    },
    /// `http.auth_token` is too short to be a secret.
    #[error("`http.auth_token` must be at least {min} characters")]
    AuthTokenTooShort {
        /// The shortest accepted token.
        min: usize,
    },
    /// A canary pair whose baseline and canary are the same version.
    #[error("`canary[{index}]`: `baseline` and `canary` are both {version:?}")]
    CanarySameVersion {
        /// The entry.
        index: usize,
        /// The version.
        version: String,
    },
    /// Two `[[canary]]` entries for one model.
    #[error(
        "`canary[{index}].model`: model {model:?} already has a canary pair in `canary[{first}]`"
    )]
    DuplicateCanary {
        /// The second entry.
        index: usize,
        /// The first entry of the model.
        first: usize,
        /// The model.
        model: String,
    },
    /// A canary share outside (0, 1).
    #[error("`canary[{index}].expected_share` must be strictly between 0 and 1, got {value}")]
    CanaryShare {
        /// The entry.
        index: usize,
        /// The value given.
        value: f64,
    },
    /// An `[alerts]` value refused by the alerting crate (its message names the key, e.g.
    /// `alerts.rules[1].channels[0]`).
    #[error(transparent)]
    Alert(#[from] modelwatch_alert::ConfigError),
    /// An `[alerts.channels.NAME]` or `[alerts.retry]` value refused by the delivery crate (its
    /// message names the key within the table).
    #[error("`{key}`")]
    Channel {
        /// The table, e.g. `alerts.channels.oncall`.
        key: String,
        /// What is wrong.
        #[source]
        source: modelwatch_notify::ConfigError,
    },
    /// A windows, drift, limits or latency value refused by the core (its message names the key).
    #[error(transparent)]
    Core(#[from] modelwatch_core::config::ConfigError),
}
