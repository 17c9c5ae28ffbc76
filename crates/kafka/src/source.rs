//! The consumer-group source: records from Kafka in batches, offsets committed only by the caller.
//!
//! Contract (see design/delivery.md):
//! - auto-commit and the automatic offset store are off: Kafka offsets move only when the caller
//!   calls [`Source::commit`], after its data is durable, with the offsets it chooses (the next
//!   offset to read, per partition), never the consumer's position. [`Source::close`] commits
//!   nothing;
//! - on assignment the source asks the caller's resume function for each partition's resume
//!   offset (the checkpoint's `R`) and starts there; `None` falls back to the committed offset,
//!   then to `auto_offset_reset`;
//! - records of one partition arrive in offset order, in [`SourceEvent::Batch`]es of at most
//!   `max_batch` records (and some 64 MiB of keys and payloads), through a channel of
//!   `channel_capacity` events: when the caller falls behind, the poll thread waits instead of
//!   buffering more;
//! - on revocation the poll thread sends [`SourceEvent::Revoked`] after every batch already
//!   handed over and blocks the rebalance until the caller calls [`Revoked::ack`] (or drops
//!   it, or `revoke_timeout` passes), so the caller can finish those batches, checkpoint and
//!   commit. Records polled but not yet handed over for a revoked partition are dropped: the
//!   next owner reads them again from the checkpoint;
//! - [`Source::pause`] and [`Source::resume`] are forwarded to the poll thread, which keeps
//!   polling while partitions are paused (even with a full channel once every assigned
//!   partition is paused), so the consumer stays in its group and prefetch stays bounded by
//!   `queued_max_kbytes`. Pauses do not survive a rebalance: pause again after an assignment.
//!   A caller that stops reading the channel without pausing stops the poll loop, and the group
//!   drops the consumer after `max.poll.interval.ms`.
//!
//! A [`Batch`] holds its records' keys and payloads one after the other in one buffer (the
//! records are read in place as [`RecordRef`]s): filling it allocates nothing per record. A
//! caller that hands each processed batch back with [`Source::recycle`] lets the poll thread
//! refill it, so that catching up allocates nothing at all once warm. The pool keeps no more
//! batches than can be in flight at once (the channel's, the caller's and the poll thread's),
//! and none whose buffer outgrew [`POOL_MAX_BATCH_BYTES`].
//!
//! The high watermark of every assigned partition, as the last fetch response reported it, comes
//! from librdkafka's statistics (every second, no extra request): [`Source::high_watermark`]
//! tells a partition that is behind (records wait in the broker) from one that is quiet.
//!
//! The poll loop runs on its own std thread; every [`Source`] method is blocking and is meant for
//! a blocking thread, not an async task.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig, ClientContext, Message, Offset, Statistics, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol},
    error::KafkaError,
    types::{RDKafkaErrorCode, RDKafkaRespErr},
};

/// A record read from Kafka, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The topic (shared by every record of the topic).
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
    /// The record timestamp in milliseconds since the epoch, if it has one.
    pub timestamp: Option<i64>,
    /// The key bytes, if any.
    pub key: Option<Vec<u8>>,
    /// The value bytes, if any (none: a tombstone).
    pub payload: Option<Vec<u8>>,
}

/// A record of a [`Batch`], borrowed: its key and payload point into the batch's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The topic (shared by every record of the topic).
    pub topic: &'a Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
    /// The record timestamp in milliseconds since the epoch, if it has one.
    pub timestamp: Option<i64>,
    /// The key bytes, if any.
    pub key: Option<&'a [u8]>,
    /// The value bytes, if any (none: a tombstone).
    pub payload: Option<&'a [u8]>,
}

impl RecordRef<'_> {
    /// An owned copy.
    pub fn to_record(&self) -> Record {
        Record {
            topic: Arc::clone(self.topic),
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.map(<[u8]>::to_vec),
            payload: self.payload.map(<[u8]>::to_vec),
        }
    }
}

impl<'a> From<&'a Record> for RecordRef<'a> {
    fn from(r: &'a Record) -> Self {
        Self {
            topic: &r.topic,
            partition: r.partition,
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.as_deref(),
            payload: r.payload.as_deref(),
        }
    }
}

/// Where a record's fields are in its [`Batch`].
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Index into the batch's topics.
    topic: u32,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    /// (start, end) in the batch's bytes.
    key: Option<(u32, u32)>,
    payload: Option<(u32, u32)>,
}

/// Records in offset order per partition, their keys and payloads copied one after the other
/// into a single buffer: a batch costs no allocation per record, and one handed back with
/// [`Source::recycle`] is refilled without allocating at all.
#[derive(Default)]
pub struct Batch {
    /// The topics of the records (usually one or two).
    topics: Vec<Arc<str>>,
    slots: Vec<Slot>,
    data: Vec<u8>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Batch {
    fn with_capacity(records: usize) -> Self {
        Self { topics: Vec::new(), slots: Vec::with_capacity(records), data: Vec::new() }
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The records, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = RecordRef<'_>> + '_ {
        self.slots.iter().map(|s| self.record(s))
    }

    /// The `i`th record.
    pub fn get(&self, i: usize) -> Option<RecordRef<'_>> {
        self.slots.get(i).map(|s| self.record(s))
    }

    fn record(&self, s: &Slot) -> RecordRef<'_> {
        let bytes = |r: Option<(u32, u32)>| r.map(|(a, b)| &self.data[a as usize..b as usize]);
        RecordRef {
            topic: &self.topics[s.topic as usize],
            partition: s.partition,
            offset: s.offset,
            timestamp: s.timestamp,
            key: bytes(s.key),
            payload: bytes(s.payload),
        }
    }

    /// Appends a record, copying its key and payload; `intern` gives the shared name of a
    /// topic new to the batch.
    #[allow(clippy::too_many_arguments, reason = "a record's fields")]
    fn push(
        &mut self,
        topic: &str,
        intern: impl FnOnce(&str) -> Arc<str>,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) {
        // Records of one topic come in runs: compare with the previous one first.
        let t = match self.slots.last() {
            Some(s) if *self.topics[s.topic as usize] == *topic => s.topic as usize,
            _ => match self.topics.iter().position(|t| **t == *topic) {
                Some(t) => t,
                None => {
                    self.topics.push(intern(topic));
                    self.topics.len() - 1
                }
            },
        };
        let mut copy = |bytes: Option<&[u8]>| {
            bytes.map(|b| {
                let start = self.data.len();
                self.data.extend_from_slice(b);
                (start as u32, self.data.len() as u32)
            })
        };
        let (key, payload) = (copy(key), copy(payload));
        self.slots.push(Slot { topic: t as u32, partition, offset, timestamp, key, payload });
    }

    /// Keeps only the records `keep` says yes to (their bytes stay until the batch is cleared).
    fn retain(&mut self, mut keep: impl FnMut(&str, i32) -> bool) {
        let topics = &self.topics;
        self.slots.retain(|s| keep(&topics[s.topic as usize], s.partition));
    }

    /// Empties the batch, keeping its memory.
    fn clear(&mut self) {
        self.topics.clear();
        self.slots.clear();
        self.data.clear();
    }

    /// The bytes of the records' keys and payloads so far.
    fn bytes(&self) -> usize {
        self.data.len()
    }
}

/// Owned copies of the records (tests and tools; the engine reads the batch in place).
impl IntoIterator for Batch {
    type Item = Record;
    type IntoIter = std::vec::IntoIter<Record>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter().map(|r| r.to_record()).collect::<Vec<_>>().into_iter()
    }
}

/// What the poll thread hands to the caller.
#[derive(Debug)]
pub enum SourceEvent {
    /// Records in offset order per partition.
    Batch(Batch),
    /// Partitions are being taken away: finish the batches received so far, checkpoint,
    /// commit, then [`Revoked::ack`].
    Revoked(Revoked),
}

/// A revocation the rebalance waits on; see [`SourceEvent::Revoked`].
#[derive(Debug)]
pub struct Revoked {
    /// The partitions leaving this consumer, as (topic, partition).
    pub partitions: Vec<(String, i32)>,
    ack: SyncSender<()>,
}

impl Revoked {
    /// Lets the rebalance go on (dropping the value does too, without waiting for the timeout).
    pub fn ack(self) {
        // The rebalance may have timed out already: nothing to tell then.
        let _ = self.ack.try_send(());
    }
}

/// Where a group without a usable committed offset starts (`auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The oldest record kept.
    #[default]
    Earliest,
    /// Only records produced from now on.
    Latest,
}

impl OffsetReset {
    fn as_str(self) -> &'static str {
        match self {
            Self::Earliest => "earliest",
            Self::Latest => "latest",
        }
    }
}

/// Settings of a [`Source`].
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The consumer group.
    pub group_id: String,
    /// The topics to subscribe to.
    pub topics: Vec<String>,
    /// Where to start without a resume offset or a committed offset.
    pub auto_offset_reset: OffsetReset,
    /// Records per batch, at most.
    pub max_batch: usize,
    /// Events (batches or revocations) waiting in the channel, at most.
    pub channel_capacity: usize,
    /// How long one poll waits for the first record of a batch.
    pub poll_timeout: Duration,
    /// How long a revocation waits for [`Revoked::ack`] (keep it under `max.poll.interval.ms`).
    pub revoke_timeout: Duration,
    /// Prefetched kilobytes per partition, at most (`queued.max.messages.kbytes`).
    pub queued_max_kbytes: u32,
    /// Bytes per fetch response, at most (`fetch.max.bytes`).
    pub fetch_max_bytes: u32,
    /// Bytes per partition in a fetch response, at most (`max.partition.fetch.bytes`).
    pub max_partition_fetch_bytes: u32,
    /// Further librdkafka properties, applied last (they override the fields above, except
    /// that auto-commit and the automatic offset store stay off).
    pub properties: BTreeMap<String, String>,
}

impl SourceOptions {
    /// Options with the defaults: batches of 2,048 records, 8 batches in the channel, 100 ms
    /// polls, 60 s to acknowledge a revocation, 16 MiB of prefetch per partition, 1 MiB per
    /// partition per fetch (librdkafka's default: with 4 MiB, the tansu broker of the test suite
    /// stopped delivering a partition after some 47,000 records, deterministically).
    pub fn new(
        brokers: impl Into<String>,
        group_id: impl Into<String>,
        topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            brokers: brokers.into(),
            group_id: group_id.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            auto_offset_reset: OffsetReset::Earliest,
            max_batch: 2_048,
            channel_capacity: 8,
            poll_timeout: Duration::from_millis(100),
            revoke_timeout: Duration::from_secs(60),
            queued_max_kbytes: 16 * 1024,
            fetch_max_bytes: 50 * 1024 * 1024,
            max_partition_fetch_bytes: 1024 * 1024,
            properties: BTreeMap::new(),
        }
    }

    /// Checks the options without I/O.
    fn validate(&self) -> Result<(), SourceError> {
        if self.group_id.trim().is_empty() {
            return Err(SourceError::EmptyGroup);
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(SourceError::NoTopics);
        }
        if self.max_batch == 0 || self.channel_capacity == 0 {
            return Err(SourceError::ZeroCapacity);
        }
        Ok(())
    }

    /// The librdkafka configuration these options describe.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("auto.offset.reset", self.auto_offset_reset.as_str())
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "100")
            .set("fetch.max.bytes", self.fetch_max_bytes.to_string())
            .set("max.partition.fetch.bytes", self.max_partition_fetch_bytes.to_string())
            .set("queued.max.messages.kbytes", self.queued_max_kbytes.max(1).to_string())
            .set("statistics.interval.ms", "1000");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c.set("enable.auto.commit", "false").set("enable.auto.offset.store", "false");
        c
    }
}

/// Why the source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No consumer group (no I/O was done).
    #[error("the consumer group id is empty")]
    EmptyGroup,
    /// No topic, or an empty topic name (no I/O was done).
    #[error("no topics to consume, or an empty topic name")]
    NoTopics,
    /// `max_batch` or `channel_capacity` is zero (no I/O was done).
    #[error("max_batch and channel_capacity must be at least 1")]
    ZeroCapacity,
    /// librdkafka refused the configuration; not retryable.
    #[error("failed to create the kafka consumer")]
    Create(#[source] KafkaError),
    /// The subscription failed (a bad topic name, say); not retryable.
    #[error("failed to subscribe")]
    Subscribe(#[source] KafkaError),
    /// The commit failed (not in the group any more, broker down); retry, or let the next
    /// owner resume from the checkpoint.
    #[error("failed to commit offsets")]
    Commit(#[source] KafkaError),
    /// Pausing or resuming failed (a partition not assigned, say).
    #[error("failed to pause or resume partitions")]
    Pause(#[source] KafkaError),
    /// The poll thread is gone (closed, or it panicked).
    #[error("the poll thread is not running")]
    Stopped,
}

/// The caller's checkpoint lookup: the offset to resume a (topic, partition) at.
type ResumeFn = dyn Fn(&str, i32) -> Option<i64> + Send + Sync;

/// The consumer context: assignment and revocation on the poll thread.
struct Ctx {
    resume: Box<ResumeFn>,
    events: SyncSender<SourceEvent>,
    revoke_timeout: Duration,
    /// Set when closing: revocations then do not wait for the caller.
    closing: AtomicBool,
    /// Partitions revoked since the poll thread last looked (to drop their pending records).
    revoked: Mutex<Vec<(String, i32)>>,
    /// Set with `revoked` so the poll thread checks it without taking the lock per record.
    revoked_any: AtomicBool,
    poll_errors: AtomicU64,
    /// High watermarks by topic and partition, from the statistics.
    high_watermarks: Mutex<HashMap<String, HashMap<i32, i64>>>,
}

impl ClientContext for Ctx {
    /// Keeps each partition's high watermark (librdkafka's `hi_offset`: what the last fetch
    /// response or offset lookup said; -1 when unknown).
    fn stats(&self, statistics: Statistics) {
        let Ok(mut map) = self.high_watermarks.lock() else { return };
        map.clear();
        for (name, topic) in statistics.topics {
            let parts: HashMap<i32, i64> = topic
                .partitions
                .into_iter()
                .filter(|(p, s)| *p >= 0 && s.hi_offset >= 0)
                .map(|(p, s)| (p, s.hi_offset))
                .collect();
            if !parts.is_empty() {
                map.insert(name, parts);
            }
        }
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts: Vec<(String, i32)> =
                    tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
                for (topic, partition) in parts {
                    if let Some(r) = (self.resume)(&topic, partition) {
                        let _ = tpl.set_partition_offset(&topic, partition, Offset::Offset(r));
                    }
                }
                if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let parts: Vec<(String, i32)> =
                    tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
                if !self.closing.load(Ordering::Acquire) {
                    self.hand_over_revocation(parts.clone());
                }
                if let Ok(mut r) = self.revoked.lock() {
                    r.extend(parts);
                    self.revoked_any.store(true, Ordering::Release);
                }
                if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() }
            }
            _ => consumer.unassign(),
        };
        if result.is_err() {
            self.poll_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Ctx {
    /// Sends `Revoked` behind the batches already queued and waits for the acknowledgement.
    fn hand_over_revocation(&self, partitions: Vec<(String, i32)>) {
        let deadline = Instant::now() + self.revoke_timeout;
        let (ack, acked) = sync_channel(1);
        let mut event = SourceEvent::Revoked(Revoked { partitions, ack });
        loop {
            match self.events.try_send(event) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    event = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return,
            }
        }
        let _ = acked.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

enum Command {
    Pause(TopicPartitionList),
    Resume(TopicPartitionList),
}

/// A running consumer-group source; see the module docs for the contract.
pub struct Source {
    consumer: Arc<BaseConsumer<Ctx>>,
    probe: WatermarkProbe,
    events: Receiver<SourceEvent>,
    commands: SyncSender<(Command, SyncSender<Result<(), KafkaError>>)>,
    /// Processed batches going back to the poll thread for reuse.
    recycle: SyncSender<Batch>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("running", &self.thread.is_some()).finish_non_exhaustive()
    }
}

/// Asks the brokers for partitions' low and high watermarks; see [`Source::watermark_probe`].
///
/// It is a client of its own, with its own connections: a lookup that times out makes
/// librdkafka drop the connection it was sent on, and on the consumer's connection that would
/// abandon an in-flight fetch (and, on a slow broker, every fetch after it).
#[derive(Clone)]
pub struct WatermarkProbe {
    consumer: Arc<BaseConsumer>,
}

impl std::fmt::Debug for WatermarkProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatermarkProbe").finish_non_exhaustive()
    }
}

impl WatermarkProbe {
    /// The offset one past the last record of a partition (a network round trip, blocking).
    pub fn high_watermark(
        &self,
        topic: &str,
        partition: i32,
        timeout: Duration,
    ) -> Result<i64, KafkaError> {
        self.consumer.fetch_watermarks(topic, partition, timeout).map(|(_, high)| high)
    }
}

/// Commands waiting for the poll thread, at most.
const COMMAND_CAPACITY: usize = 16;

impl Source {
    /// Creates the consumer, subscribes and starts the poll thread. `resume` gives the
    /// checkpoint's resume offset of a (topic, partition) on assignment (called on the poll
    /// thread).
    pub fn start(
        opts: &SourceOptions,
        resume: impl Fn(&str, i32) -> Option<i64> + Send + Sync + 'static,
    ) -> Result<Self, SourceError> {
        opts.validate()?;
        let (events_tx, events) = sync_channel(opts.channel_capacity);
        let ctx = Ctx {
            resume: Box::new(resume),
            events: events_tx,
            revoke_timeout: opts.revoke_timeout,
            closing: AtomicBool::new(false),
            revoked: Mutex::new(Vec::new()),
            revoked_any: AtomicBool::new(false),
            poll_errors: AtomicU64::new(0),
            high_watermarks: Mutex::new(HashMap::new()),
        };
        let consumer: BaseConsumer<Ctx> =
            opts.client_config().create_with_context(ctx).map_err(SourceError::Create)?;
        // Never subscribed: it joins no group, it only looks offsets up.
        let mut probe_config = opts.client_config();
        probe_config.set("statistics.interval.ms", "0");
        let probe = WatermarkProbe {
            consumer: Arc::new(probe_config.create().map_err(SourceError::Create)?),
        };
        let topics: Vec<&str> = opts.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(SourceError::Subscribe)?;
        let consumer = Arc::new(consumer);
        let (commands, command_rx) = sync_channel(COMMAND_CAPACITY);
        // Batches in flight at once: the channel's, one with the caller, one being filled
        // (and one more, for a caller that hands a batch back only after receiving the next).
        let in_flight = opts.channel_capacity.saturating_add(3);
        let (recycle, recycled) = sync_channel(in_flight);
        let stop = Arc::new(AtomicBool::new(false));
        let poll = PollLoop {
            consumer: Arc::clone(&consumer),
            commands: command_rx,
            recycled,
            pool: Pool::new(opts.max_batch, in_flight),
            stop: Arc::clone(&stop),
            max_batch: opts.max_batch,
            poll_timeout: opts.poll_timeout,
            topics: HashMap::new(),
            paused: HashSet::new(),
            errors: ErrorReport::default(),
        };
        let thread = std::thread::Builder::new()
            .name("modelwatch-kafka-poll".into())
            .spawn(move || poll.run())
            .map_err(|_| SourceError::Stopped)?;
        Ok(Self { consumer, probe, events, commands, recycle, stop, thread: Some(thread) })
    }

    /// The events, in order: read them from one thread.
    pub fn events(&self) -> &Receiver<SourceEvent> {
        &self.events
    }

    /// The next event, waiting at most `timeout` (`None`: nothing arrived in time).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<SourceEvent>, SourceError> {
        match self.events.recv_timeout(timeout) {
            Ok(e) => Ok(Some(e)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(SourceError::Stopped),
        }
    }

    /// Gives a processed batch back: the poll thread refills it instead of allocating.
    /// Optional, and it never blocks: a batch not given back, or that finds the pool full, is
    /// freed.
    pub fn recycle(&self, batch: Batch) {
        let _ = self.recycle.try_send(batch);
    }

    /// Commits the given offsets synchronously: per (topic, partition), the next offset to read
    /// (one past the last durable record). Call it only after the data is durable.
    pub fn commit(&self, offsets: &[(&str, i32, i64)]) -> Result<(), SourceError> {
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for &(topic, partition, offset) in offsets {
            tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
                .map_err(SourceError::Commit)?;
        }
        self.consumer.commit(&tpl, CommitMode::Sync).map_err(SourceError::Commit)
    }

    /// Stops fetching the given partitions; the consumer keeps polling, so it stays in its group.
    pub fn pause(&self, partitions: &[(&str, i32)]) -> Result<(), SourceError> {
        self.command(Command::Pause(partition_list(partitions)))
    }

    /// Restarts fetching the given partitions where they stopped.
    pub fn resume(&self, partitions: &[(&str, i32)]) -> Result<(), SourceError> {
        self.command(Command::Resume(partition_list(partitions)))
    }

    fn command(&self, command: Command) -> Result<(), SourceError> {
        let (reply, result) = sync_channel(1);
        self.commands.send((command, reply)).map_err(|_| SourceError::Stopped)?;
        result.recv().map_err(|_| SourceError::Stopped)?.map_err(SourceError::Pause)
    }

    /// A handle that asks the brokers for partitions' end offsets (for lag), usable from
    /// another thread while this source runs.
    pub fn watermark_probe(&self) -> WatermarkProbe {
        self.probe.clone()
    }

    /// The high watermark of a partition (the offset after its last record) as the broker last
    /// reported it in a fetch response, refreshed every `statistics.interval.ms` (1 s) without
    /// a request of its own: cheap enough to ask on every tick. `None` until known.
    pub fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        let map = self.consumer.context().high_watermarks.lock().ok()?;
        map.get(topic)?.get(&partition).copied()
    }

    /// Poll and rebalance errors seen so far (librdkafka retries them itself).
    pub fn poll_errors(&self) -> u64 {
        self.consumer.context().poll_errors.load(Ordering::Relaxed)
    }

    /// Stops the poll thread and leaves the group. Commits nothing; records handed over and not
    /// committed are read again by the next owner.
    pub fn close(mut self) -> Result<(), SourceError> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), SourceError> {
        self.consumer.context().closing.store(true, Ordering::Release);
        self.stop.store(true, Ordering::Release);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| SourceError::Stopped),
            None => Ok(()),
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}

fn partition_list(partitions: &[(&str, i32)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for &(topic, partition) in partitions {
        tpl.add_partition(topic, partition);
    }
    tpl
}

/// A pooled batch whose bytes outgrew this many is freed instead of reused (a burst of huge
/// records does not pin its size in the pool).
pub const POOL_MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// A batch ends early once its keys and payloads pass this many bytes (their positions in the
/// batch's buffer are `u32`s).
const BATCH_MAX_BYTES: usize = 64 * 1024 * 1024;

/// Batches are preallocated for this many records at most (a larger `max_batch` grows them).
const PREALLOCATED_BATCH: usize = 4_096;

/// Batches given back by the caller, for the poll thread to refill.
struct Pool {
    batches: Vec<Batch>,
    /// Batches kept, at most (as many as can be in flight).
    max_batches: usize,
    /// Record capacity of a new batch.
    batch_capacity: usize,
}

impl Pool {
    fn new(max_batch: usize, in_flight_batches: usize) -> Self {
        Self {
            batches: Vec::new(),
            max_batches: in_flight_batches,
            batch_capacity: max_batch.min(PREALLOCATED_BATCH),
        }
    }

    /// Takes a processed batch back (the most recently returned is reused first: its memory is
    /// the most likely to be in cache).
    fn take_back(&mut self, mut batch: Batch) {
        if self.batches.len() >= self.max_batches || batch.data.capacity() > POOL_MAX_BATCH_BYTES {
            return;
        }
        batch.clear();
        self.batches.push(batch);
    }

    /// An empty batch, reused if one is free.
    fn batch(&mut self) -> Batch {
        self.batches.pop().unwrap_or_else(|| Batch::with_capacity(self.batch_capacity))
    }
}

/// The poll thread's state.
struct PollLoop {
    consumer: Arc<BaseConsumer<Ctx>>,
    commands: Receiver<(Command, SyncSender<Result<(), KafkaError>>)>,
    /// Batches the caller gave back.
    recycled: Receiver<Batch>,
    pool: Pool,
    stop: Arc<AtomicBool>,
    max_batch: usize,
    poll_timeout: Duration,
    /// One shared name per topic.
    topics: HashMap<String, Arc<str>>,
    paused: HashSet<(String, i32)>,
    errors: ErrorReport,
}

/// How often the same consumer error is logged at most: librdkafka reports a failing fetch
/// every time it retries it, about once a second per partition.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// The consumer errors the poll thread logs: each kind at once, then at most once per
/// [`ERROR_LOG_INTERVAL`], with the count of those not logged in between.
#[derive(Debug, Default)]
struct ErrorReport {
    /// By the error's text: when it was last logged, and how often it came since.
    kinds: HashMap<String, (Instant, u64)>,
}

impl ErrorReport {
    /// Kinds remembered at most (librdkafka's error codes are a few dozen).
    const MAX_KINDS: usize = 64;

    fn report(&mut self, e: &KafkaError) {
        if let Some(suppressed) = self.due(e.to_string(), Instant::now()) {
            Self::log(e, suppressed);
        }
    }

    /// Whether an error of `kind` at `now` is logged: `Some` with the number of its kind not
    /// logged since the last one, or `None` (counted) when one was logged less than
    /// [`ERROR_LOG_INTERVAL`] ago.
    fn due(&mut self, kind: String, now: Instant) -> Option<u64> {
        if let Some((at, suppressed)) = self.kinds.get_mut(&kind) {
            if now.duration_since(*at) < ERROR_LOG_INTERVAL {
                *suppressed += 1;
                return None;
            }
            *at = now;
            return Some(std::mem::take(suppressed));
        }
        if self.kinds.len() >= Self::MAX_KINDS {
            self.kinds.clear();
        }
        self.kinds.insert(kind, (now, 0));
        Some(0)
    }

    fn log(e: &KafkaError, suppressed: u64) {
        if let KafkaError::MessageConsumption(RDKafkaErrorCode::NotImplemented) = e {
            tracing::error!(
                error = %e,
                suppressed,
                "kafka consumer error: librdkafka reports this for a batch compressed with a \
                 codec this build lacks (zstd); its partition does not advance past it: \
                 configure the producers with lz4, snappy or gzip"
            );
        } else {
            tracing::warn!(error = %e, suppressed, "kafka consumer error (librdkafka retries)");
        }
    }
}

impl PollLoop {
    fn run(mut self) {
        let mut pending = Batch::default();
        while !self.stop.load(Ordering::Acquire) {
            self.serve_commands();
            if pending.is_empty() {
                self.fill(&mut pending, self.poll_timeout);
                continue;
            }
            let batch = std::mem::take(&mut pending);
            match self.consumer.context().events.try_send(SourceEvent::Batch(batch)) {
                Ok(()) => {}
                Err(TrySendError::Full(SourceEvent::Batch(back))) => {
                    pending = back;
                    if self.all_paused() {
                        // Stay in the group; paused partitions deliver nothing new.
                        self.fill(&mut pending, Duration::from_millis(10));
                    } else {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                Err(_) => return,
            }
        }
    }

    fn serve_commands(&mut self) {
        loop {
            match self.commands.try_recv() {
                Ok((command, reply)) => {
                    let result = match command {
                        Command::Pause(tpl) => self.consumer.pause(&tpl).inspect(|()| {
                            for e in tpl.elements() {
                                self.paused.insert((e.topic().to_owned(), e.partition()));
                            }
                        }),
                        Command::Resume(tpl) => self.consumer.resume(&tpl).inspect(|()| {
                            for e in tpl.elements() {
                                self.paused.remove(&(e.topic().to_owned(), e.partition()));
                            }
                        }),
                    };
                    let _ = reply.try_send(result);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }

    fn all_paused(&self) -> bool {
        self.consumer.assignment().is_ok_and(|a| {
            a.elements()
                .iter()
                .all(|e| self.paused.contains(&(e.topic().to_owned(), e.partition())))
        })
    }

    /// Polls up to `max_batch` records into `pending`, waiting at most `timeout` for the first.
    fn fill(&mut self, pending: &mut Batch, timeout: Duration) {
        while let Ok(batch) = self.recycled.try_recv() {
            self.pool.take_back(batch);
        }
        if pending.is_empty() {
            if pending.slots.capacity() == 0 {
                *pending = self.pool.batch();
            } else {
                pending.clear(); // all dropped on a revocation: its bytes go too
            }
        }
        let consumer = Arc::clone(&self.consumer);
        let mut wait = timeout;
        while pending.len() < self.max_batch && pending.bytes() < BATCH_MAX_BYTES {
            let polled = consumer.poll(wait);
            self.drop_revoked(pending);
            match polled {
                None => break,
                Some(Err(e)) => {
                    self.consumer.context().poll_errors.fetch_add(1, Ordering::Relaxed);
                    self.errors.report(&e);
                    break;
                }
                Some(Ok(m)) => {
                    let topics = &mut self.topics;
                    // Called once per topic and batch.
                    let intern = |name: &str| match topics.get(name) {
                        Some(t) => Arc::clone(t),
                        None => {
                            let t: Arc<str> = Arc::from(name);
                            topics.insert(name.to_owned(), Arc::clone(&t));
                            t
                        }
                    };
                    pending.push(
                        m.topic(),
                        intern,
                        m.partition(),
                        m.offset(),
                        m.timestamp().to_millis(),
                        m.key(),
                        m.payload(),
                    );
                }
            }
            wait = Duration::ZERO;
        }
    }

    /// Drops pending records (and pauses) of partitions revoked during the last poll.
    fn drop_revoked(&mut self, pending: &mut Batch) {
        let ctx = self.consumer.context();
        if !ctx.revoked_any.load(Ordering::Acquire) {
            return;
        }
        let revoked = match ctx.revoked.lock() {
            Ok(mut r) => {
                ctx.revoked_any.store(false, Ordering::Release);
                std::mem::take(&mut *r)
            }
            Err(_) => return,
        };
        let gone: HashSet<(String, i32)> = revoked.into_iter().collect();
        pending.retain(|topic, partition| !gone.contains(&(topic.to_owned(), partition)));
        self.paused.retain(|p| !gone.contains(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_consumer_error_is_logged_once_per_interval_with_the_count_between() {
        let mut r = ErrorReport::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let fetch = || "Message consumption error: NotImplemented".to_owned();
        assert_eq!(r.due(fetch(), at(0)), Some(0), "the first of a kind is logged");
        assert_eq!(r.due(fetch(), at(1)), None);
        assert_eq!(r.due(fetch(), at(29)), None);
        assert_eq!(r.due("another".to_owned(), at(29)), Some(0), "kinds are apart");
        assert_eq!(r.due(fetch(), at(30)), Some(2), "then with the count not logged");
        assert_eq!(r.due(fetch(), at(31)), None);
        assert_eq!(r.due(fetch(), at(70)), Some(1));
        for k in 0..ErrorReport::MAX_KINDS + 5 {
            r.due(format!("kind {k}"), at(70));
        }
        assert!(r.kinds.len() <= ErrorReport::MAX_KINDS, "bounded");
    }

    #[test]
    fn validation_has_named_errors() {
        let ok = SourceOptions::new("127.0.0.1:9092", "g", ["t"]);
        assert!(ok.validate().is_ok());
        let o = SourceOptions::new("b", " ", ["t"]);
        assert!(matches!(o.validate(), Err(SourceError::EmptyGroup)));
        let o = SourceOptions::new("b", "g", Vec::<String>::new());
        assert!(matches!(o.validate(), Err(SourceError::NoTopics)));
        let o = SourceOptions { channel_capacity: 0, ..ok.clone() };
        assert!(matches!(o.validate(), Err(SourceError::ZeroCapacity)));
        let o = SourceOptions { max_batch: 0, ..ok };
        assert!(matches!(o.validate(), Err(SourceError::ZeroCapacity)));
    }

    fn push(b: &mut Batch, topic: &str, offset: i64, key: Option<&[u8]>, payload: Option<&[u8]>) {
        b.push(topic, |t| Arc::from(t), 1, offset, Some(offset * 10), key, payload);
    }

    #[test]
    fn a_batch_gives_back_every_record_as_pushed() {
        let mut b = Batch::with_capacity(4);
        push(&mut b, "a", 5, Some(b"k5"), Some(&[5; 600]));
        push(&mut b, "a", 6, None, Some(b""));
        push(&mut b, "b", 0, Some(b""), None);
        push(&mut b, "a", 7, Some(b"k7"), Some(b"p7"));
        assert_eq!(b.len(), 4);
        let got: Vec<Record> = b.iter().map(|r| r.to_record()).collect();
        let want = [
            ("a", 5, Some(&b"k5"[..]), Some(&[5u8; 600][..])),
            ("a", 6, None, Some(&b""[..])),
            ("b", 0, Some(&b""[..]), None),
            ("a", 7, Some(&b"k7"[..]), Some(&b"p7"[..])),
        ];
        for (r, (topic, offset, key, payload)) in got.iter().zip(want) {
            assert_eq!(&*r.topic, topic);
            assert_eq!((r.partition, r.offset, r.timestamp), (1, offset, Some(offset * 10)));
            assert_eq!((r.key.as_deref(), r.payload.as_deref()), (key, payload));
        }
        // One shared name per topic within the batch.
        assert!(Arc::ptr_eq(b.get(0).unwrap().topic, b.get(3).unwrap().topic));

        // Dropping a revoked partition keeps the others, in order.
        b.retain(|topic, _| topic == "a");
        let offsets: Vec<i64> = b.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [5, 6, 7]);
        assert_eq!(b.get(2).unwrap().payload, Some(&b"p7"[..]));
    }

    #[test]
    fn a_recycled_batch_is_refilled_in_its_own_memory() {
        let mut pool = Pool::new(8, 2);
        let mut b = pool.batch();
        for i in 0..8 {
            push(&mut b, "t", i, Some(b"key"), Some(&[7; 634]));
        }
        let (slots, data) = (b.slots.as_ptr(), b.data.as_ptr());
        pool.take_back(b);
        let mut again = pool.batch();
        assert!(again.is_empty(), "a recycled batch comes back empty");
        for i in 0..8 {
            push(&mut again, "t", 100 + i, Some(b"k"), Some(&[9; 600]));
        }
        assert_eq!((again.slots.as_ptr(), again.data.as_ptr()), (slots, data), "no new memory");
        assert!(again.iter().enumerate().all(|(i, r)| r.offset == 100 + i as i64
            && r.key == Some(&b"k"[..])
            && r.payload == Some(&[9; 600][..])));
    }

    #[test]
    fn the_pool_is_bounded_and_drops_oversized_batches() {
        let mut pool = Pool::new(4, 2);
        for _ in 0..5 {
            let mut b = Batch::with_capacity(4);
            push(&mut b, "t", 0, None, Some(b"x"));
            pool.take_back(b);
        }
        assert_eq!(pool.batches.len(), 2);
        let mut pool = Pool::new(4, 2);
        let mut b = Batch::with_capacity(4);
        push(&mut b, "t", 0, None, Some(&vec![0; POOL_MAX_BATCH_BYTES + 1]));
        pool.take_back(b);
        assert!(pool.batches.is_empty());
    }

    #[test]
    fn offsets_stay_ours_whatever_the_properties_say() {
        let mut o = SourceOptions::new("b", "g", ["t"]);
        o.properties.insert("enable.auto.commit".into(), "true".into());
        o.properties.insert("enable.auto.offset.store".into(), "true".into());
        o.properties.insert("fetch.wait.max.ms".into(), "50".into());
        let c = o.client_config();
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("fetch.wait.max.ms"), Some("50"));
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("16384"));
        assert_eq!(c.get("auto.offset.reset"), Some("earliest"));
    }
}
