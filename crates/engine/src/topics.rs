//! Input topics and the partition ids the tracker and the rows use.
//!
//! Every input topic has an index: the inference topics first, then the metric topics, in the
//! order of the configuration. A (topic, Kafka partition) has two ids:
//! - the **tracker id**, dense (0, 1, 2, ... in order of first appearance in this process), so
//!   the tracker's per-partition state stays a small vector;
//! - the **source partition** written to `pane_stats` and `pane_bins`:
//!   `topic index * 1,000,000 + Kafka partition`, stable across restarts and instances, so
//!   rows rewritten by a replay (or by the next owner of the partition) replace the first ones.
//!   The first inference topic's rows carry the plain Kafka partition. Keep the order of the
//!   topics in the configuration when adding one (append), or the ids of rows change.

use std::sync::Arc;

use rustc_hash::FxHashMap;

/// Source partitions of one topic index are spaced by this much.
pub const TOPIC_STRIDE: u32 = 1_000_000;

/// What a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// `modelwatch.v1.InferenceLog` records.
    Inference = 0,
    /// `modelwatch.v1.MetricEvent` records.
    Metric = 1,
}

/// One input topic.
#[derive(Debug, Clone)]
pub struct Topic {
    /// The name.
    pub name: Arc<str>,
    /// What it carries.
    pub kind: TopicKind,
    /// Its index (see the module docs).
    pub index: u32,
}

/// The input topics and the ids of their partitions.
#[derive(Debug, Clone, Default)]
pub struct Topics {
    topics: Vec<Topic>,
    by_name: FxHashMap<Arc<str>, u32>,
    /// (topic index, Kafka partition) -> tracker id.
    ids: FxHashMap<(u32, i32), u32>,
    /// tracker id -> (topic index, Kafka partition).
    parts: Vec<(u32, i32)>,
}

impl Topics {
    /// The inference topics, then the metric topics.
    pub fn new<'a>(
        inference: impl IntoIterator<Item = &'a str>,
        metric: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut t = Self::default();
        let all = inference
            .into_iter()
            .map(|n| (n, TopicKind::Inference))
            .chain(metric.into_iter().map(|n| (n, TopicKind::Metric)));
        for (name, kind) in all {
            let index = t.topics.len() as u32;
            let name: Arc<str> = name.into();
            t.by_name.insert(Arc::clone(&name), index);
            t.topics.push(Topic { name, kind, index });
        }
        t
    }

    /// Every topic, by index.
    pub fn all(&self) -> &[Topic] {
        &self.topics
    }

    /// The topic of a name.
    pub fn by_name(&self, name: &str) -> Option<&Topic> {
        self.by_name.get(name).map(|&i| &self.topics[i as usize])
    }

    /// The topic of an index.
    pub fn topic(&self, index: u32) -> &Topic {
        &self.topics[index as usize]
    }

    /// The tracker id of a partition, assigned on first use.
    pub fn tracker_id(&mut self, topic: u32, partition: i32) -> u32 {
        if let Some(&id) = self.ids.get(&(topic, partition)) {
            return id;
        }
        let id = self.parts.len() as u32;
        self.parts.push((topic, partition));
        self.ids.insert((topic, partition), id);
        id
    }

    /// The tracker id of a partition already seen.
    pub fn existing_id(&self, topic: u32, partition: i32) -> Option<u32> {
        self.ids.get(&(topic, partition)).copied()
    }

    /// (topic index, Kafka partition) of a tracker id.
    pub fn partition_of(&self, tracker_id: u32) -> (u32, i32) {
        self.parts[tracker_id as usize]
    }

    /// The stable source partition of a tracker id (see the module docs).
    pub fn source_partition(&self, tracker_id: u32) -> u32 {
        let (t, p) = self.partition_of(tracker_id);
        t * TOPIC_STRIDE + p.max(0) as u32
    }

    /// The tracker id of a stable source partition (allocated when new); `None` when it names
    /// no configured topic.
    pub fn tracker_id_of_source(&mut self, source_partition: u32) -> Option<u32> {
        let t = source_partition / TOPIC_STRIDE;
        let p = (source_partition % TOPIC_STRIDE) as i32;
        ((t as usize) < self.all().len()).then(|| self.tracker_id(t, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_dense_and_source_partitions_stable() {
        let mut t = Topics::new(["inf"], ["met"]);
        assert_eq!(t.by_name("met").map(|x| x.index), Some(1));
        let a = t.tracker_id(1, 7);
        let b = t.tracker_id(0, 3);
        assert_eq!((a, b, t.tracker_id(1, 7)), (0, 1, 0));
        assert_eq!(t.source_partition(a), 1_000_007);
        assert_eq!(t.source_partition(b), 3);
        assert_eq!(t.existing_id(0, 4), None);
    }
}
