//! Frozen bin layouts: how feature, prediction and label values become bin counts.
//!
//! Drift is only reproducible if every version of a model, and every replay of the same input,
//! puts a value in the same bin. So each (model, feature) gets one layout, shared by all versions
//! of the model, frozen once from the first [`DriftSpec::edge_samples`] values of that feature
//! (from any version; values seen while collecting are not binned), and never changed after. The
//! layouts are serialisable ([`FrozenLayout`]) so they are persisted and reloaded on start.
//!
//! - Numeric: with `lower` and `upper` the smallest and largest collected value and `interior`
//!   the distinct quantiles at `i / bins` (nearest rank, `i = 1 .. bins - 1`) above `lower`, bin 0
//!   is the underflow `x < lower`, bin `1 + k` holds `lower <= x <= upper` where `k` interior edges
//!   are `<= x`, and the last bin is the overflow `x > upper`. A discrete feature thus gets one bin
//!   per value; a constant one gets three bins. Non-finite values are not binned (counted apart).
//! - Categorical (and the predicted label): the `top_k` most frequent collected values (ties
//!   broken by value, so freezing is deterministic) and a last bin "other".
//!
//! [`DriftSpec::edge_samples`]: crate::config::DriftSpec::edge_samples

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::config::DriftSpec;
use crate::event::{InferenceRecord, Key16};
use crate::pane::BinCounts;

/// What a binned distribution describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// A numeric input (`features` map).
    Numeric,
    /// A categorical input (`categories` map).
    Categorical,
    /// The numeric output (`prediction`).
    Prediction,
    /// The categorical output (`predicted_label`).
    Label,
}

impl FeatureKind {
    /// The name used in output rows: `numeric`, `categorical`, `prediction` or `label`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Numeric => "numeric",
            Self::Categorical => "categorical",
            Self::Prediction => "prediction",
            Self::Label => "label",
        }
    }
}

/// The feature name under which the prediction's bins are reported.
pub const PREDICTION_FEATURE: &str = "prediction";
/// The feature name under which the predicted label's bins are reported.
pub const LABEL_FEATURE: &str = "predicted_label";

/// The frozen bins of one (model, feature).
///
/// ```
/// use modelwatch_core::bins::BinLayout;
///
/// let mut samples: Vec<f64> = (0..100).map(f64::from).collect();
/// let layout = BinLayout::numeric_from_samples(&mut samples, 4);
/// assert_eq!(layout.bin_count(), 6); // underflow, 4 quantile bins, overflow
/// assert_eq!(layout.numeric_bin(-1.0), Some(0));
/// assert_eq!(layout.numeric_bin(0.0), Some(1));
/// assert_eq!(layout.numeric_bin(99.0), Some(4));
/// assert_eq!(layout.numeric_bin(100.0), Some(5));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BinLayout {
    /// Quantile edges with underflow and overflow bins.
    Numeric {
        /// Smallest collected value: below it is the underflow bin.
        lower: f64,
        /// Distinct quantile edges, strictly increasing, all above `lower`.
        interior: Vec<f64>,
        /// Largest collected value: above it is the overflow bin.
        upper: f64,
    },
    /// The most frequent values, then "other".
    Categorical {
        /// Kept values, most frequent first.
        values: Vec<String>,
    },
}

impl BinLayout {
    /// Freezes numeric edges from collected finite values (reordered in place).
    pub fn numeric_from_samples(samples: &mut [f64], bins: u16) -> Self {
        samples.sort_unstable_by(f64::total_cmp);
        let (Some(&lower), Some(&upper)) = (samples.first(), samples.last()) else {
            return Self::Numeric { lower: 0.0, interior: Vec::new(), upper: 0.0 };
        };
        let n = samples.len();
        let mut interior: Vec<f64> = Vec::with_capacity(usize::from(bins));
        for i in 1..bins {
            // Nearest-rank quantile at i / bins.
            let rank = (usize::from(i) * n).div_ceil(usize::from(bins)).max(1);
            let q = samples[rank.min(n) - 1];
            if q > lower && interior.last().is_none_or(|&last| q > last) {
                interior.push(q);
            }
        }
        Self::Numeric { lower, interior, upper }
    }

    /// Freezes the top-k values from collected (value, count) pairs.
    pub fn categorical_from_counts<'a>(
        counts: impl IntoIterator<Item = (&'a str, u64)>,
        top_k: u16,
    ) -> Self {
        let mut v: Vec<(&str, u64)> = counts.into_iter().collect();
        v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.truncate(usize::from(top_k));
        Self::Categorical { values: v.into_iter().map(|(s, _)| s.to_owned()).collect() }
    }

    /// Number of bins, underflow/overflow or "other" included.
    pub fn bin_count(&self) -> usize {
        match self {
            Self::Numeric { interior, .. } => interior.len() + 3,
            Self::Categorical { values } => values.len() + 1,
        }
    }

    /// The bin of a numeric value; `None` for a non-finite value or a categorical layout.
    #[inline]
    pub fn numeric_bin(&self, x: f64) -> Option<usize> {
        let Self::Numeric { lower, interior, upper } = self else { return None };
        if !x.is_finite() {
            None
        } else if x < *lower {
            Some(0)
        } else if x > *upper {
            Some(interior.len() + 2)
        } else {
            Some(1 + count_at_or_below(interior, x))
        }
    }

    /// A readable name of each bin, for output rows and dashboards.
    pub fn bin_labels(&self) -> Vec<String> {
        match self {
            Self::Numeric { lower, interior, upper } => {
                let mut out = vec![format!("(-inf, {lower})")];
                let mut lo = *lower;
                for &e in interior {
                    out.push(format!("[{lo}, {e})"));
                    lo = e;
                }
                out.push(format!("[{lo}, {upper}]"));
                out.push(format!("({upper}, +inf)"));
                out
            }
            Self::Categorical { values } => {
                let mut out = values.clone();
                out.push("__other__".to_owned());
                out
            }
        }
    }
}

/// A persisted layout: what is reloaded on start so that a replay bins identically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrozenLayout {
    /// Feature name (`prediction` and `predicted_label` for the outputs).
    pub feature: String,
    /// What the feature is.
    pub kind: FeatureKind,
    /// The bins.
    pub layout: BinLayout,
    /// Event time of the value that completed the sample, in ms since the epoch.
    pub frozen_at_ms: i64,
    /// The event that completed the sample: (tracker partition, offset). A replay restoring
    /// the layout does not bin that partition's events up to it, as the first run did not
    /// (they were edge samples), so it writes the same bins. `None`: unknown (bin everything).
    #[serde(default)]
    pub frozen_at: Option<(u32, i64)>,
}

/// Most distinct categorical values counted while collecting.
const MAX_COLLECT_DISTINCT: usize = 4_096;

#[derive(Debug)]
enum SlotState {
    Collecting { numeric: Vec<f64>, categorical: FxHashMap<Box<str>, u64>, seen: u32 },
    Frozen { layout: BinLayout, index: ValueIndex, offset: u32 },
}

/// The bin of each value of a frozen categorical layout.
///
/// Values of up to 15 bytes are kept packed with their length in one integer
/// ([`pack_short`]) and found by a scan of a few integers: no hashing, and no string of the
/// heap to compare against (with many models those are cold). Longer values are in a map.
#[derive(Debug, Default)]
struct ValueIndex {
    short: Vec<(u128, u32)>,
    long: FxHashMap<Box<str>, u32>,
}

impl ValueIndex {
    fn insert(&mut self, value: &str, bin: u32) {
        match pack_short(value) {
            Some(k) => self.short.push((k, bin)),
            None => {
                self.long.insert(value.into(), bin);
            }
        }
    }

    #[inline]
    fn get(&self, value: &str) -> Option<u32> {
        match pack_short(value) {
            Some(k) => self.short.iter().find(|e| e.0 == k).map(|e| e.1),
            None => self.long.get(value).copied(),
        }
    }

    fn heap_bytes(&self) -> usize {
        self.short.capacity() * size_of::<(u128, u32)>() + self.long.capacity() * 32
    }
}

/// A string of at most 15 bytes as one integer: its bytes, then its length in the top byte
/// (so "a" and "a\0" differ). `None` for a longer string.
#[inline]
fn pack_short(value: &str) -> Option<u128> {
    let b = value.as_bytes();
    if b.len() > 15 {
        return None;
    }
    let mut k = (b.len() as u128) << 120;
    for (i, &c) in b.iter().enumerate() {
        k |= u128::from(c) << (8 * i);
    }
    Some(k)
}

#[derive(Debug)]
struct Slot {
    name: Box<str>,
    kind: FeatureKind,
    state: SlotState,
    frozen_at_ms: i64,
    frozen_at: Option<(u32, i64)>,
    /// Restored and not counting yet: events of the partition up to the offset were edge
    /// samples in the run that froze the layout (see [`FrozenLayout::frozen_at`]).
    pending: Option<(u32, i64)>,
}

impl Slot {
    fn new(name: &str, kind: FeatureKind) -> Self {
        Self {
            name: name.into(),
            kind,
            state: SlotState::Collecting {
                numeric: Vec::new(),
                categorical: FxHashMap::default(),
                seen: 0,
            },
            frozen_at_ms: 0,
            frozen_at: None,
            pending: None,
        }
    }
}

/// A frozen feature's place in the flat bin vectors of its model.
#[derive(Debug, Clone, Copy)]
pub struct FeatureRef<'a> {
    /// Feature name.
    pub name: &'a str,
    /// What it is.
    pub kind: FeatureKind,
    /// Its layout.
    pub layout: &'a BinLayout,
    /// First bin in the model's flat vectors.
    pub offset: usize,
}

impl FeatureRef<'_> {
    /// This feature's counts within a model's flat count vector (shorter vectors read as zeros
    /// past their end, which the caller sees as a shorter slice).
    pub fn slice<'c, T>(&self, flat: &'c [T]) -> &'c [T] {
        let end = (self.offset + self.layout.bin_count()).min(flat.len());
        flat.get(self.offset.min(end)..end).unwrap_or(&[])
    }
}

/// Counters of what binning could not record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BinDrops {
    /// Feature occurrences dropped because the model reached `limits.max_features`.
    pub over_feature_cap: u64,
    /// Non-finite numeric values (not binned).
    pub non_finite: u64,
}

/// The bin layouts of one model and the binning of its events into flat count vectors.
///
/// Every frozen feature owns the range `offset .. offset + bin_count` of the model's flat
/// vectors; ranges are appended as features freeze, so existing counts never move.
#[derive(Debug)]
pub(crate) struct ModelBins {
    slots: Vec<Slot>,
    numeric_names: FxHashMap<Box<str>, u32>,
    categorical_names: FxHashMap<Box<str>, u32>,
    /// (slot, name hash) of the feature last seen at each position of a record: producers keep
    /// their map order, so this spares a hash-map lookup (and a cold name) per feature.
    numeric_order: Vec<(u32, u64)>,
    categorical_order: Vec<(u32, u64)>,
    prediction: u32,
    label: u32,
    /// Per slot, what binning a numeric value needs, packed: the hot path reads this and the
    /// model's flat edge array instead of the slot (cold) and its own edge vector.
    hot: Vec<Hot>,
    edges: Vec<f64>,
    /// Per slot, the last record (by `record_seq`) that counted it.
    stamps: Vec<u64>,
    record_seq: u64,
    /// The numeric feature names of recent records with, per position, the slot each counts in:
    /// a record named exactly like one of them is binned without looking at a single name.
    shapes: Vec<Shape>,
    /// The shape replaced when a new one is recorded (round robin).
    next_shape: usize,
    /// Bumped whenever a slot starts or stops counting (it freezes, is restored, waits for its
    /// freezing event again or stops waiting): compiled [`Cell`]s of an older generation are
    /// compiled again before use.
    generation: u64,
    /// The prediction's cell, compiled at `prediction_cell.0`.
    prediction_cell: (u64, Option<Cell>),
    /// Per position of a record's categorical features (the first [`MAX_CAT_POSITIONS`]), the
    /// name last counted there and its slot.
    cat_cells: Vec<Option<CatCell>>,
    /// Per slot, its categorical lookup compiled at a generation: `None` when the slot is not
    /// counting or the layout could not be compiled (see [`CatTable::new`]). The predicted
    /// label's too.
    cat_tables: Vec<(u64, Option<CatTable>)>,
    /// Per position of the record being binned the slow way, its slot (the plan of a new shape).
    plan_scratch: Vec<u32>,
    total_bins: u32,
    user_features: u32,
    pub(crate) drops: BinDrops,
}

const NO_SLOT: u32 = u32::MAX;

/// Shapes of numeric feature names remembered per model: a model's versions may name their
/// features differently (a canary that adds one), and a producer that omits absent features
/// sends a few shapes in turn.
const MAX_SHAPES: usize = 4;

/// Why a feature of a record is not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// The model has `max_features` features already.
    Capped,
    /// The record counted the name at a later position.
    Repeated,
}

/// The numeric feature names of a record, in order, and where each position counts.
#[derive(Debug, Default)]
struct Shape {
    /// The names concatenated.
    text: Vec<u8>,
    /// The end of each name in `text`.
    ends: Vec<u32>,
    /// Per position, the slot it counts in; [`NO_SLOT`] when it does not count (a name
    /// repeated later in the record, or one over the feature cap).
    plan: Vec<u32>,
    /// Positions over the feature cap (each is counted as a drop per record).
    capped: u64,
    /// The counted positions compiled into cells, valid while `cells_gen` is the model's
    /// generation; empty when one of them cannot be (see [`Cell::new`]): those records take
    /// the general path.
    cells: Vec<Cell>,
    cells_gen: u64,
}

/// The categorical feature a position of a model's records held last: its name and slot. A
/// record named so at that position finds its slot without hashing the name; another name
/// there takes the general path and replaces the cell (a slot never changes names, so the cell
/// cannot go stale; the slot's lookup is compiled per slot, in `ModelBins::cat_tables`).
#[derive(Debug, Clone, Copy)]
struct CatCell {
    name: Key16,
    slot: u32,
}

/// Positions of a record's categorical features with a [`CatCell`]; later ones take the
/// general path.
const MAX_CAT_POSITIONS: usize = 64;

/// Slots of a [`CatTable`]'s hash (a power of two).
const CAT_SLOTS: usize = 64;
/// Values of up to 16 bytes a [`CatTable`] takes (a larger top-k takes the general path).
const CAT_MAX_VALUES: usize = 24;

/// A frozen categorical layout compiled for lookup: a collision-free multiplicative hash of
/// its values (the multiplier is searched for when the table is built), so that a value's bin
/// takes one hash, one load and one comparison, without the data-dependent branches of a scan
/// (which a CPU mispredicts on every other event when values arrive in random order).
#[derive(Debug)]
struct CatTable {
    mult: u64,
    /// Per hash slot, the value's index in `dense`, 0 when empty.
    slots: [u8; CAT_SLOTS],
    /// [`Key16::NONE`] (which no key equals), then the layout's values in bin order; a value
    /// over 16 bytes is [`Key16::NONE`] too (a short key cannot equal it).
    dense: Vec<Key16>,
    /// The layout's first bin in the model's flat vectors.
    offset: u32,
    /// The "other" bin within the layout.
    other: u32,
}

impl CatTable {
    /// The table of a layout's values, or `None` when there are too many or no multiplier
    /// separates them.
    fn new(values: &[String], offset: u32) -> Option<Self> {
        if values.len() > CAT_MAX_VALUES {
            return None;
        }
        let mut dense = vec![Key16::NONE];
        dense.extend(values.iter().map(|v| Key16::of(v.as_bytes()).unwrap_or(Key16::NONE)));
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        'search: for _ in 0..1_000 {
            // splitmix64: deterministic candidates.
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let mult = (z ^ (z >> 31)) | 1;
            let mut slots = [0u8; CAT_SLOTS];
            for (j, &k) in dense.iter().enumerate().skip(1) {
                if k == Key16::NONE {
                    continue;
                }
                let h = Self::slot(k, mult);
                if slots[h] != 0 {
                    continue 'search;
                }
                slots[h] = j as u8;
            }
            let other = values.len() as u32;
            return Some(Self { mult, slots, dense, offset, other });
        }
        None
    }

    fn heap_bytes(&self) -> usize {
        self.dense.capacity() * size_of::<Key16>()
    }

    #[inline(always)]
    fn slot(k: Key16, mult: u64) -> usize {
        (k.fold().wrapping_mul(mult) >> (64 - CAT_SLOTS.trailing_zeros())) as usize
    }

    /// The flat bin of a value of at most 16 bytes.
    #[inline(always)]
    fn bin(&self, k: Key16) -> usize {
        let j = usize::from(self.slots[Self::slot(k, self.mult) % CAT_SLOTS]);
        let hit = self.dense.get(j).is_some_and(|d| *d == k);
        let b = std::hint::select_unpredictable(hit, (j as u32).wrapping_sub(1), self.other);
        (self.offset + b) as usize
    }
}

impl Shape {
    fn heap_bytes(&self) -> usize {
        self.text.capacity()
            + self.ends.capacity() * 4
            + self.plan.capacity() * 4
            + self.cells.capacity() * size_of::<Cell>()
    }
}

/// Never a model's generation: a shape's cells are compiled before their first use.
const NOT_COMPILED: u64 = u64::MAX;

/// Edges a [`Cell`] holds: `lower`, up to 13 interior edges (up to 14 bins; the default of 10
/// bins has 9) and the double after `upper`, then at least one +inf.
const CELL_EDGES: usize = 16;

/// A frozen numeric layout compiled for binning: the bin of a finite value is the number of
/// edges at or below it, found in two rounds of independent comparisons (no branch to
/// mispredict on the underflow and overflow bins).
///
/// The edges are `lower`, the interior edges, and the smallest double above `upper`, then
/// +inf (which no finite value reaches). With the edges sorted, a value below `lower` is below
/// every edge (bin 0), one above `upper` is at or above all but the padding (the overflow
/// bin), and one in between counts `lower` and the interior edges at or below it: that is
/// [`BinLayout::numeric_bin`], which a property test checks.
#[derive(Debug, Clone, Copy)]
struct Cell {
    edges: [f64; CELL_EDGES],
    /// The layout's first bin in the model's flat vectors.
    offset: u32,
    /// The value's position among the record's numeric features.
    pos: u32,
}

impl Cell {
    /// The cell of a numeric layout, or `None` when it has too many edges or edges out of
    /// order (a restored layout could), which the general path bins.
    fn new(lower: f64, interior: &[f64], upper: f64, offset: u32, pos: u32) -> Option<Self> {
        if interior.len() + 2 >= CELL_EDGES {
            return None;
        }
        let mut edges = [f64::INFINITY; CELL_EDGES];
        edges[0] = lower;
        edges[1..=interior.len()].copy_from_slice(interior);
        edges[interior.len() + 1] = upper.next_up();
        // Sorted (NaN fails too): the edges at or below a value are a prefix.
        let sorted = edges.windows(2).all(|w| w[0] <= w[1]) && lower <= upper;
        sorted.then_some(Self { edges, offset, pos })
    }

    /// The flat bin of a finite value: the length of the prefix of edges at or below it
    /// (at most 15: the last edge is +inf). Two rounds of three independent comparisons: the
    /// last edge of each group of four gives the group, then the group's first three edges
    /// give the place in it (a binary search would chain four dependent loads).
    #[inline(always)]
    fn bin(&self, x: f64) -> usize {
        let e = &self.edges;
        let group = 4 * (usize::from(e[3] <= x) + usize::from(e[7] <= x) + usize::from(e[11] <= x));
        let within = usize::from(e[group] <= x)
            + usize::from(e[group + 1] <= x)
            + usize::from(e[group + 2] <= x);
        self.offset as usize + group + within
    }
}

/// How many of the sorted `edges` are `<= x`. A binary search is a chain of dependent loads
/// (four for ten bins, twenty features per event); counting with independent comparisons
/// vectorises and is several times faster for the few edges a layout has.
#[inline]
fn count_at_or_below(edges: &[f64], x: f64) -> usize {
    if edges.len() <= 32 {
        edges.iter().map(|&e| usize::from(e <= x)).sum()
    } else {
        edges.partition_point(|&e| e <= x)
    }
}

/// Edges compared per step when counting (two SSE2 registers of doubles).
const EDGE_LANES: usize = 4;

/// [`count_at_or_below`] of edges padded with +inf to a multiple of [`EDGE_LANES`] (the
/// padding is never counted: `x` is finite), in whole steps.
#[inline]
fn count_padded_at_or_below(edges: &[f64], x: f64) -> usize {
    if edges.len() <= 32 {
        edges
            .chunks_exact(EDGE_LANES)
            .map(|c| c.iter().map(|&e| usize::from(e <= x)).sum::<usize>())
            .sum()
    } else {
        edges.partition_point(|&e| e <= x)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Hot {
    frozen: bool,
    offset: u32,
    edges_start: u32,
    edges_len: u32,
    /// `edges_len` rounded up to [`EDGE_LANES`]: the packed edges are padded with +inf, which
    /// no finite value reaches, so the count runs in whole vector steps without a tail.
    edges_padded: u32,
    lower: f64,
    upper: f64,
}

/// A 64-bit hash of a feature name (length included). Two different names at the same position
/// of a model's records would have to collide on all 64 bits to be confused.
#[inline]
fn name_hash(name: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write(name.as_bytes());
    h.write_usize(name.len());
    h.finish()
}

impl ModelBins {
    pub(crate) fn new() -> Self {
        let mut m = Self {
            slots: Vec::new(),
            numeric_names: FxHashMap::default(),
            categorical_names: FxHashMap::default(),
            numeric_order: Vec::new(),
            categorical_order: Vec::new(),
            prediction: 0,
            label: 1,
            hot: vec![Hot::default(); 2],
            edges: Vec::new(),
            stamps: vec![0; 2],
            record_seq: 0,
            shapes: Vec::new(),
            next_shape: 0,
            generation: 0,
            prediction_cell: (NOT_COMPILED, None),
            cat_cells: Vec::new(),
            cat_tables: Vec::new(),
            plan_scratch: Vec::new(),
            total_bins: 0,
            user_features: 0,
            drops: BinDrops::default(),
        };
        m.slots.push(Slot::new(PREDICTION_FEATURE, FeatureKind::Prediction));
        m.slots.push(Slot::new(LABEL_FEATURE, FeatureKind::Label));
        m
    }

    /// Total bins of the frozen layouts: the length of a complete flat vector.
    pub(crate) fn total_bins(&self) -> usize {
        self.total_bins as usize
    }

    /// Installs a persisted layout (before any event of the feature is seen).
    pub(crate) fn restore(&mut self, f: &FrozenLayout, max_features: u32) -> bool {
        // Plans name slots; a restored layout may add one.
        self.shapes.clear();
        let slot = match f.kind {
            FeatureKind::Prediction => self.prediction,
            FeatureKind::Label => self.label,
            kind => match self.slot_for(&f.feature, kind, max_features) {
                Some(s) => s,
                None => return false,
            },
        };
        if matches!(self.slots[slot as usize].state, SlotState::Frozen { .. }) {
            return false;
        }
        // The range is taken now (restoring in freezing order gives every feature its range
        // again); counting starts after the freezing event (see `pending`).
        self.freeze(slot, f.layout.clone(), f.frozen_at_ms, f.frozen_at);
        if f.frozen_at.is_some() {
            self.hot[slot as usize].frozen = false;
            self.slots[slot as usize].pending = f.frozen_at;
        }
        self.generation += 1;
        true
    }

    /// The partition will be read again from an earlier offset (a replay in this process):
    /// the layouts it froze wait for their freezing event again, as restored ones do.
    pub(crate) fn rearm(&mut self, partition: u32) {
        for (i, s) in self.slots.iter_mut().enumerate() {
            if matches!(s.state, SlotState::Frozen { .. })
                && let Some(at) = s.frozen_at.filter(|(p, _)| *p == partition)
            {
                s.pending = Some(at);
                self.hot[i].frozen = false;
            }
        }
        self.generation += 1;
    }

    /// A restored slot waiting for its freezing event: `true` while `src` is at or before it
    /// in the same partition (the value is not binned, as in the first run). Past it, or at
    /// an event of another partition, the slot starts counting.
    #[cold]
    fn still_pending(&mut self, slot: u32, src: (u32, i64)) -> bool {
        let s = &mut self.slots[slot as usize];
        let Some((p, o)) = s.pending else { return false };
        if src.0 == p && src.1 <= o {
            return true;
        }
        s.pending = None;
        self.hot[slot as usize].frozen = true;
        self.generation += 1;
        false
    }

    fn slot_for(&mut self, name: &str, kind: FeatureKind, max_features: u32) -> Option<u32> {
        let map = if kind == FeatureKind::Numeric {
            &mut self.numeric_names
        } else {
            &mut self.categorical_names
        };
        if let Some(&s) = map.get(name) {
            return Some(s);
        }
        if self.user_features >= max_features {
            self.drops.over_feature_cap += 1;
            return None;
        }
        let id = self.slots.len() as u32;
        map.insert(name.into(), id);
        self.slots.push(Slot::new(name, kind));
        self.hot.push(Hot::default());
        self.stamps.push(0);
        self.user_features += 1;
        Some(id)
    }

    fn freeze(&mut self, slot: u32, layout: BinLayout, at_ms: i64, at: Option<(u32, i64)>) {
        let offset = self.total_bins;
        self.total_bins += layout.bin_count() as u32;
        let mut index = ValueIndex::default();
        let mut hot = Hot { frozen: true, offset, ..Hot::default() };
        match &layout {
            BinLayout::Categorical { values } => {
                for (i, v) in values.iter().enumerate() {
                    index.insert(v, i as u32);
                }
            }
            BinLayout::Numeric { lower, interior, upper } => {
                hot.edges_start = self.edges.len() as u32;
                hot.edges_len = interior.len() as u32;
                hot.edges_padded = interior.len().next_multiple_of(EDGE_LANES) as u32;
                hot.lower = *lower;
                hot.upper = *upper;
                self.edges.extend_from_slice(interior);
                let padding = (hot.edges_padded - hot.edges_len) as usize;
                self.edges.extend(std::iter::repeat_n(f64::INFINITY, padding));
            }
        }
        self.hot[slot as usize] = hot;
        self.generation += 1;
        let s = &mut self.slots[slot as usize];
        s.state = SlotState::Frozen { layout, index, offset };
        s.frozen_at_ms = at_ms;
        s.frozen_at = at;
    }

    /// Bins one numeric value of a slot: counts it (the hot path, inlined) or collects it.
    #[inline(always)]
    fn numeric(
        &mut self,
        slot: u32,
        x: f64,
        bins: &mut BinCounts,
        spec: &DriftSpec,
        at_ms: i64,
        src: (u32, i64),
    ) {
        let h = self.hot[slot as usize];
        if h.frozen && x.is_finite() {
            // Same rule as `BinLayout::numeric_bin`, on the packed copy of the layout.
            let edges =
                &self.edges[h.edges_start as usize..(h.edges_start + h.edges_padded) as usize];
            let b = if x < h.lower {
                0
            } else if x > h.upper {
                h.edges_len as usize + 2
            } else {
                1 + count_padded_at_or_below(edges, x)
            };
            bins.incr(h.offset as usize + b, self.total_bins as usize);
        } else {
            self.numeric_cold(slot, x, bins, spec, at_ms, src);
        }
    }

    /// A non-finite value, or a feature still collecting its edge samples.
    #[cold]
    #[inline(never)]
    fn numeric_cold(
        &mut self,
        slot: u32,
        x: f64,
        bins: &mut BinCounts,
        spec: &DriftSpec,
        at_ms: i64,
        src: (u32, i64),
    ) {
        if !x.is_finite() {
            self.drops.non_finite += 1;
            return;
        }
        if self.slots[slot as usize].pending.is_some() {
            if !self.still_pending(slot, src) {
                self.numeric(slot, x, bins, spec, at_ms, src);
            }
            return;
        }
        let s = &mut self.slots[slot as usize];
        if let SlotState::Collecting { numeric, seen, .. } = &mut s.state {
            numeric.push(x);
            *seen += 1;
            if *seen >= spec.edge_samples() {
                let layout = BinLayout::numeric_from_samples(numeric, spec.bins());
                self.freeze(slot, layout, at_ms, Some(src));
            }
        }
    }

    #[inline]
    fn categorical(
        &mut self,
        slot: u32,
        v: &str,
        bins: &mut BinCounts,
        spec: &DriftSpec,
        at_ms: i64,
        src: (u32, i64),
    ) {
        if self.slots[slot as usize].pending.is_some() && self.still_pending(slot, src) {
            return;
        }
        let s = &mut self.slots[slot as usize];
        match &mut s.state {
            SlotState::Frozen { layout, index, offset } => {
                let b = index.get(v).unwrap_or((layout.bin_count() - 1) as u32);
                bins.incr((*offset + b) as usize, self.total_bins as usize);
            }
            SlotState::Collecting { categorical, seen, .. } => {
                if let Some(c) = categorical.get_mut(v) {
                    *c += 1;
                } else if categorical.len() < MAX_COLLECT_DISTINCT {
                    categorical.insert(v.into(), 1);
                }
                *seen += 1;
                if *seen >= spec.edge_samples() {
                    let layout = BinLayout::categorical_from_counts(
                        categorical.iter().map(|(k, &c)| (&**k, c)),
                        spec.top_k(),
                    );
                    self.freeze(slot, layout, at_ms, Some(src));
                }
            }
        }
    }

    /// Bins every feature, the prediction and the label of an event into `bins`.
    pub(crate) fn record(
        &mut self,
        rec: &InferenceRecord,
        bins: &mut BinCounts,
        spec: &DriftSpec,
        max_features: u32,
        src: (u32, i64),
    ) {
        self.record_with::<true>(rec, bins, spec, max_features, src);
    }

    /// [`ModelBins::record`]; without `COMPILED`, every name is looked at and every value binned
    /// by its layout, not through remembered shapes and compiled cells and tables (tests
    /// compare the two).
    #[inline(always)]
    fn record_with<const COMPILED: bool>(
        &mut self,
        rec: &InferenceRecord,
        bins: &mut BinCounts,
        spec: &DriftSpec,
        max_features: u32,
        src: (u32, i64),
    ) {
        let at = rec.event_time_ms;
        // A name repeated within one record counts once, its last value winning (as a map
        // decoded by apache-avro or kept by most producers would); stamps mark slots seen.
        self.record_seq = self.record_seq.wrapping_add(1);
        let seq = self.record_seq;
        let known = if COMPILED {
            self.shapes.iter().position(|s| rec.has_feature_shape(&s.text, &s.ends))
        } else {
            None
        };
        if let Some(k) = known {
            // Same iteration order as below, so that layouts freezing in one record take their
            // ranges in the same order whichever way the record is binned.
            let mut shapes = std::mem::take(&mut self.shapes);
            let shape = &mut shapes[k];
            self.drops.over_feature_cap += shape.capped;
            if shape.cells_gen != self.generation {
                self.compile(shape);
            }
            if shape.cells.is_empty() {
                for (&slot, x) in shape.plan.iter().zip(rec.feature_values()).rev() {
                    if slot != NO_SLOT {
                        self.numeric(slot, x, bins, spec, at, src);
                    }
                }
            } else {
                // Every counted position is frozen: nothing can freeze, so order is free.
                let total = self.total_bins as usize;
                for c in &shape.cells {
                    let x = rec.feature_value(c.pos as usize);
                    if x.is_finite() {
                        bins.incr(c.bin(x), total);
                    } else {
                        self.drops.non_finite += 1;
                    }
                }
            }
            self.shapes = shapes;
        } else {
            self.numeric_by_name(rec, bins, spec, max_features, seq, src);
        }
        for (i, (name, value)) in rec.category_keys().enumerate().rev() {
            let cell = self.cat_cells.get(i).copied().flatten();
            let slot = match cell.filter(|c| COMPILED && Some(c.name) == name) {
                Some(c) => {
                    if std::mem::replace(&mut self.stamps[c.slot as usize], seq) == seq {
                        // Repeated later in the record, which counted it.
                        continue;
                    }
                    c.slot
                }
                None => {
                    let name_text = rec.category(i).0;
                    let kind = FeatureKind::Categorical;
                    let Ok(slot) = self.slot_at(i, name_text, kind, max_features, seq) else {
                        continue;
                    };
                    if let Some(name) = name {
                        self.remember_category(i, name, slot);
                    }
                    slot
                }
            };
            // A value over 16 bytes, or a slot without a lookup: the general path.
            match self.table_bin(slot, value.filter(|_| COMPILED)) {
                Some(b) => bins.incr(b, self.total_bins as usize),
                None => self.categorical(slot, rec.category(i).1, bins, spec, at, src),
            }
        }
        if let Some(p) = rec.prediction {
            if self.prediction_cell.0 != self.generation && COMPILED {
                self.prediction_cell = (self.generation, self.cell(self.prediction, 0));
            }
            match self.prediction_cell.1 {
                Some(c) if p.is_finite() => bins.incr(c.bin(p), self.total_bins as usize),
                _ => self.numeric(self.prediction, p, bins, spec, at, src),
            }
        }
        if let Some(label) = rec.label_key() {
            match self.table_bin(self.label, label.filter(|_| COMPILED)) {
                Some(b) => bins.incr(b, self.total_bins as usize),
                None => {
                    let l = rec.predicted_label().unwrap_or_default();
                    self.categorical(self.label, l, bins, spec, at, src);
                }
            }
        }
    }

    /// Remembers that position `i` of the model's records holds the categorical feature
    /// `name` in `slot`.
    #[inline]
    fn remember_category(&mut self, i: usize, name: Key16, slot: u32) {
        if i >= MAX_CAT_POSITIONS {
            return;
        }
        if self.cat_cells.len() <= i {
            self.cat_cells.resize(i + 1, None);
        }
        self.cat_cells[i] = Some(CatCell { name, slot });
    }

    /// The bin of `key` through the slot's lookup; `None` (no key: a value over 16 bytes, or a
    /// slot without a lookup) sends the value to the general path.
    #[inline]
    fn table_bin(&mut self, slot: u32, key: Option<Key16>) -> Option<usize> {
        let key = key?;
        Some(self.cat_table(slot)?.bin(key))
    }

    /// The lookup of a categorical slot for this generation, compiled first if need be.
    #[inline]
    fn cat_table(&mut self, slot: u32) -> Option<&CatTable> {
        let s = slot as usize;
        if self.cat_tables.get(s).is_none_or(|t| t.0 != self.generation) {
            self.compile_table(slot);
        }
        self.cat_tables.get(s).and_then(|t| t.1.as_ref())
    }

    #[cold]
    #[inline(never)]
    fn compile_table(&mut self, slot: u32) {
        let s = slot as usize;
        if self.cat_tables.len() <= s {
            self.cat_tables.resize_with(self.slots.len().max(s + 1), || (NOT_COMPILED, None));
        }
        self.cat_tables[s] = (self.generation, self.table(slot));
    }

    /// The lookup of a categorical slot that is counting (frozen, not waiting for its
    /// freezing event), or `None`.
    fn table(&self, slot: u32) -> Option<CatTable> {
        let h = self.hot.get(slot as usize).filter(|h| h.frozen)?;
        match &self.slots.get(slot as usize)?.state {
            SlotState::Frozen { layout: BinLayout::Categorical { values }, .. } => {
                CatTable::new(values, h.offset)
            }
            _ => None,
        }
    }

    /// Bins the numeric features of a record of a new shape, by name, and remembers the shape
    /// when its names lie back to back in the record.
    #[inline(never)]
    fn numeric_by_name(
        &mut self,
        rec: &InferenceRecord,
        bins: &mut BinCounts,
        spec: &DriftSpec,
        max_features: u32,
        seq: u64,
        src: (u32, i64),
    ) {
        let at = rec.event_time_ms;
        let mut plan = std::mem::take(&mut self.plan_scratch);
        plan.clear();
        plan.resize(rec.features().len(), NO_SLOT);
        let mut capped = 0;
        for (i, (name, x)) in rec.features().enumerate().rev() {
            match self.slot_at(i, name, FeatureKind::Numeric, max_features, seq) {
                Ok(slot) => {
                    plan[i] = slot;
                    self.numeric(slot, x, bins, spec, at, src);
                }
                Err(Skip::Capped) => capped += 1,
                Err(Skip::Repeated) => {}
            }
        }
        self.remember_shape(rec, &plan, capped);
        self.plan_scratch = plan;
    }

    /// The slot the feature `name` at position `i` of the record `seq` counts in, through the
    /// order cache of its kind (a name at the same position as in the model's previous record
    /// costs a hash and no map lookup).
    #[inline]
    fn slot_at(
        &mut self,
        i: usize,
        name: &str,
        kind: FeatureKind,
        max_features: u32,
        seq: u64,
    ) -> Result<u32, Skip> {
        let h = name_hash(name);
        let cached = self.order_mut(kind).get(i).copied().unwrap_or((NO_SLOT, 0));
        let slot = if cached.0 != NO_SLOT && cached.1 == h {
            cached.0
        } else {
            let s = self.slot_for(name, kind, max_features).ok_or(Skip::Capped)?;
            let order = self.order_mut(kind);
            if order.len() <= i {
                order.resize(i + 1, (NO_SLOT, 0));
            }
            order[i] = (s, h);
            s
        };
        if std::mem::replace(&mut self.stamps[slot as usize], seq) == seq {
            return Err(Skip::Repeated);
        }
        Ok(slot)
    }

    fn order_mut(&mut self, kind: FeatureKind) -> &mut Vec<(u32, u64)> {
        if kind == FeatureKind::Numeric {
            &mut self.numeric_order
        } else {
            &mut self.categorical_order
        }
    }

    /// Compiles the cells of a shape's counted positions for this generation; none when one
    /// of them is not counting or cannot be compiled.
    #[cold]
    #[inline(never)]
    fn compile(&self, shape: &mut Shape) {
        shape.cells_gen = self.generation;
        shape.cells.clear();
        for (pos, &slot) in shape.plan.iter().enumerate() {
            if slot == NO_SLOT {
                continue;
            }
            match self.cell(slot, pos as u32) {
                Some(c) => shape.cells.push(c),
                None => {
                    shape.cells.clear();
                    return;
                }
            }
        }
    }

    /// The cell of a numeric slot that is counting (frozen, not waiting for its freezing
    /// event), or `None`.
    fn cell(&self, slot: u32, pos: u32) -> Option<Cell> {
        let h = self.hot.get(slot as usize).filter(|h| h.frozen)?;
        let interior = self.edges.get(h.edges_start as usize..)?.get(..h.edges_len as usize)?;
        Cell::new(h.lower, interior, h.upper, h.offset, pos)
    }

    /// Remembers the shape of `rec`'s numeric feature names with its plan, in place of the
    /// oldest one (reusing its buffers).
    fn remember_shape(&mut self, rec: &InferenceRecord, plan: &[u32], capped: u64) {
        let fresh = self.shapes.len() < MAX_SHAPES;
        if fresh {
            self.shapes.push(Shape::default());
            self.next_shape = self.shapes.len() - 1;
        }
        let shape = &mut self.shapes[self.next_shape];
        if rec.feature_shape(&mut shape.text, &mut shape.ends) {
            shape.plan.clear();
            shape.plan.extend_from_slice(plan);
            shape.capped = capped;
            shape.cells_gen = NOT_COMPILED;
            self.next_shape = (self.next_shape + 1) % MAX_SHAPES;
        } else if fresh {
            self.shapes.pop();
        }
    }

    /// Frozen features in the order of their ranges.
    pub(crate) fn frozen(&self) -> impl Iterator<Item = FeatureRef<'_>> + '_ {
        let mut v: Vec<FeatureRef<'_>> = self
            .slots
            .iter()
            .filter_map(|s| match &s.state {
                SlotState::Frozen { layout, offset, .. } => Some(FeatureRef {
                    name: &s.name,
                    kind: s.kind,
                    layout,
                    offset: *offset as usize,
                }),
                SlotState::Collecting { .. } => None,
            })
            .collect();
        v.sort_unstable_by_key(|f| f.offset);
        v.into_iter()
    }

    /// The persistable form of every frozen layout, in freezing order (restoring them in this
    /// order gives every feature the same range again).
    pub(crate) fn frozen_layouts(&self) -> Vec<FrozenLayout> {
        let mut v: Vec<(u32, FrozenLayout)> = self
            .slots
            .iter()
            .filter_map(|s| match &s.state {
                SlotState::Frozen { layout, offset, .. } => Some((
                    *offset,
                    FrozenLayout {
                        feature: s.name.to_string(),
                        kind: s.kind,
                        layout: layout.clone(),
                        frozen_at_ms: s.frozen_at_ms,
                        frozen_at: s.frozen_at,
                    },
                )),
                SlotState::Collecting { .. } => None,
            })
            .collect();
        v.sort_unstable_by_key(|(o, _)| *o);
        v.into_iter().map(|(_, l)| l).collect()
    }

    /// Heap bytes held (approximate), for memory accounting.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|s| {
                s.name.len()
                    + match &s.state {
                        SlotState::Collecting { numeric, categorical, .. } => {
                            numeric.capacity() * 8 + categorical.capacity() * 32
                        }
                        SlotState::Frozen { layout, index, .. } => {
                            layout.bin_count() * 16 + index.heap_bytes()
                        }
                    }
            })
            .sum::<usize>()
            + self.slots.capacity() * size_of::<Slot>()
            + self.hot.capacity() * size_of::<Hot>()
            + self.edges.capacity() * 8
            + self.shapes.iter().map(Shape::heap_bytes).sum::<usize>()
            + self.cat_cells.capacity() * size_of::<Option<CatCell>>()
            + self.cat_tables.capacity() * size_of::<(u64, Option<CatTable>)>()
            + self
                .cat_tables
                .iter()
                .filter_map(|t| t.1.as_ref())
                .map(CatTable::heap_bytes)
                .sum::<usize>()
            + self.stamps.capacity() * 8
            + (self.numeric_order.capacity() + self.categorical_order.capacity()) * 16
            + self.plan_scratch.capacity() * 4
            + self.shapes.capacity() * size_of::<Shape>()
            + (self.numeric_names.capacity() + self.categorical_names.capacity()) * 24
    }

    #[cfg(test)]
    pub(crate) fn is_frozen(&self, kind: FeatureKind, name: &str) -> bool {
        self.slots.iter().any(|s| {
            s.kind == kind && &*s.name == name && matches!(s.state, SlotState::Frozen { .. })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn discrete_values_get_their_own_bins() {
        let mut s: Vec<f64> = (0..1000).map(|i| f64::from(i % 2)).collect();
        let l = BinLayout::numeric_from_samples(&mut s, 10);
        assert_eq!(l.numeric_bin(0.0), Some(1));
        assert_eq!(l.numeric_bin(1.0), Some(2));
        assert_eq!(l.bin_count(), 4);
        let mut c = vec![3.5; 100];
        let l = BinLayout::numeric_from_samples(&mut c, 10);
        assert_eq!(l.bin_count(), 3);
        assert_eq!(l.numeric_bin(3.5), Some(1));
        assert_eq!(l.numeric_bin(3.6), Some(2));
        assert_eq!(l.numeric_bin(f64::NAN), None);
    }

    #[test]
    fn quantile_bins_are_balanced() {
        let mut s: Vec<f64> = (0..2000).map(|i| f64::from(i) * 0.37).collect();
        let l = BinLayout::numeric_from_samples(&mut s.clone(), 10);
        assert_eq!(l.bin_count(), 12);
        let mut counts = vec![0u32; l.bin_count()];
        for x in s.drain(..) {
            counts[l.numeric_bin(x).expect("finite")] += 1;
        }
        assert_eq!(counts[0], 0);
        assert_eq!(counts[11], 0);
        for &c in &counts[1..11] {
            assert!((199..=201).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn value_index_finds_short_and_long_values_and_nothing_else() {
        let values = ["DE", "", "a", "a\0", "fifteen-bytes-x", "sixteen-bytes-xy", "ü-ß"];
        let mut index = ValueIndex::default();
        for (i, v) in values.iter().enumerate() {
            index.insert(v, i as u32);
        }
        for (i, v) in values.iter().enumerate() {
            assert_eq!(index.get(v), Some(i as u32), "{v:?}");
        }
        assert_eq!(index.short.len(), 6);
        for other in ["D", "DE ", "a\0\0", "fifteen-bytes-y", "sixteen-bytes-xz", "ü"] {
            assert_eq!(index.get(other), None, "{other:?}");
        }
    }

    #[test]
    fn layouts_out_of_order_or_too_fine_are_not_compiled_into_cells() {
        let interior: Vec<f64> = (1..=13).map(f64::from).collect();
        assert!(Cell::new(0.0, &interior, 14.0, 0, 0).is_some(), "14 bins fit");
        let finer: Vec<f64> = (1..=14).map(f64::from).collect();
        assert!(Cell::new(0.0, &finer, 15.0, 0, 0).is_none(), "15 bins do not");
        // Restored layouts are not checked: edges out of order or NaN take the general path.
        assert!(Cell::new(0.0, &[2.0, 1.0], 3.0, 0, 0).is_none());
        assert!(Cell::new(0.0, &[5.0], 3.0, 0, 0).is_none());
        assert!(Cell::new(0.0, &[f64::NAN], 3.0, 0, 0).is_none());
        assert!(Cell::new(4.0, &[], 3.0, 0, 0).is_none());
        let c = Cell::new(f64::MIN, &[0.0], f64::MAX, 3, 0).expect("extreme but ordered");
        assert_eq!([c.bin(f64::MIN), c.bin(-1.0), c.bin(0.0), c.bin(f64::MAX)], [4, 4, 5, 5]);
    }

    #[test]
    fn cat_tables_find_every_short_value_and_send_the_rest_to_other() {
        let values = ["DE", "US", "", "sixteen-bytes-xy", "over-sixteen-bytes", "a", "DE\0"];
        let values: Vec<String> = values.map(String::from).to_vec();
        let t = CatTable::new(&values, 5).expect("seven values separate");
        for (i, v) in values.iter().enumerate() {
            match Key16::of(v.as_bytes()) {
                Some(k) => assert_eq!(t.bin(k), 5 + i, "{v:?}"),
                None => assert!(v.len() > 16),
            }
        }
        for other in ["D", "DE\0\0", "us", "sixteen-bytes-xz", "b", "over-sixteen-byt"] {
            let k = Key16::of(other.as_bytes()).expect("short");
            assert_eq!(t.bin(k), 5 + values.len(), "{other:?}");
        }
        let many: Vec<String> = (0..=CAT_MAX_VALUES).map(|i| i.to_string()).collect();
        assert!(CatTable::new(&many, 0).is_none());
    }

    #[test]
    fn categorical_top_k_is_deterministic() {
        let l = BinLayout::categorical_from_counts([("b", 5), ("a", 5), ("c", 9), ("d", 1)], 3);
        assert_eq!(l, BinLayout::Categorical { values: vec!["c".into(), "a".into(), "b".into()] });
        assert_eq!(l.bin_labels().last().map(String::as_str), Some("__other__"));
    }

    /// Feature names a record may carry: short and long, and a prefix of another (shapes
    /// compare concatenated names, so "ab"+"c" must not pass for "a"+"bc").
    const NAMES: [&str; 7] = ["a", "bc", "ab", "c", "amount_eur", "x", "account_age_days"];

    fn shaped_record(r: &mut InferenceRecord, names: &[usize], seed: u64, interleave: bool) {
        r.clear();
        for (i, &n) in names.iter().enumerate() {
            let x = ((seed.wrapping_mul(31).wrapping_add(i as u64 * 7)) % 97) as f64 - 20.0;
            r.push_feature(
                NAMES[n],
                if (seed + i as u64).is_multiple_of(41) { f64::NAN } else { x },
            );
            if interleave && i == 0 {
                // Text pushed between two names: they no longer lie back to back.
                r.push_category("c", "v");
            }
        }
        // Short and long (over 16 bytes) names and values, a name repeated in some records.
        r.push_category(
            "country",
            ["DE", "US", "FR", "a value of over 16 bytes"][(seed % 4) as usize],
        );
        if !seed.is_multiple_of(5) {
            r.push_category("merchant_category_code", ["5411", "5812", ""][(seed % 3) as usize]);
        }
        if seed.is_multiple_of(7) {
            r.push_category("country", "GB");
        }
        r.set_predicted_label(Some(["fraud", "legit", "legit"][(seed % 3) as usize]));
        r.prediction = Some((seed % 10) as f64 / 10.0);
    }

    /// The same records binned through shapes and by name.
    struct Twin {
        fast: (ModelBins, BinCounts),
        slow: (ModelBins, BinCounts),
    }

    type Outcome = (Vec<FrozenLayout>, BinDrops, Vec<u64>);

    impl Twin {
        fn new() -> Self {
            Self {
                fast: (ModelBins::new(), BinCounts::default()),
                slow: (ModelBins::new(), BinCounts::default()),
            }
        }

        /// Bins `n` records, each filled by `fill` from its index (and offset), both ways, with
        /// layouts frozen after `edge_samples` values; the layouts, drops and counts of each.
        fn run(
            (edge_samples, bins): (u32, u16),
            cap: u32,
            n: usize,
            mut fill: impl FnMut(&mut InferenceRecord, usize),
        ) -> [Outcome; 2] {
            let spec =
                DriftSpec::new(edge_samples, std::time::Duration::from_secs(60), bins, 3, 1e-4)
                    .expect("valid");
            let mut twin = Self::new();
            let mut r = InferenceRecord::default();
            for i in 0..n {
                fill(&mut r, i);
                let src = (0, i as i64);
                twin.fast.0.record(&r, &mut twin.fast.1, &spec, cap, src);
                twin.slow.0.record_with::<false>(&r, &mut twin.slow.1, &spec, cap, src);
            }
            twin.outcome()
        }

        /// Layouts, drops and counts: through shapes, then by name.
        fn outcome(self) -> [Outcome; 2] {
            [self.fast, self.slow].map(|(m, mut bins)| {
                let mut counts = Vec::new();
                bins.drain_into(&mut counts);
                (m.frozen_layouts(), m.drops, counts)
            })
        }
    }

    proptest! {
        /// Binning through remembered shapes counts, freezes, drops and lays out exactly as
        /// looking up every name does, whatever the mix of shapes (more than are remembered),
        /// repeated names, names over the cap and records whose names are not contiguous.
        #[test]
        fn shapes_bin_exactly_as_names_do(
            shapes in proptest::collection::vec(
                proptest::collection::vec(0..NAMES.len(), 0..6), 1..8),
            picks in proptest::collection::vec((0usize..8, any::<bool>()), 1..300),
            max_features in 2u32..8,
            // 4 bins compile into cells, 20 do not (too many edges for one)
            bins in prop_oneof![Just(4u16), Just(20)],
        ) {
            let spec = (25, bins);
            let [through_shapes, by_name] = Twin::run(spec, max_features, picks.len(), |r, i| {
                let (k, interleave) = picks[i];
                shaped_record(r, &shapes[k % shapes.len()], i as u64, interleave);
            });
            prop_assert_eq!(through_shapes, by_name);
        }
    }

    /// Restored layouts wait for their freezing event, a re-armed partition waits again, and an
    /// event of another partition ends the wait: compiled cells and tables must follow every
    /// such change exactly as binning by name does.
    #[test]
    fn restored_and_rearmed_layouts_bin_through_shapes_as_by_name() {
        let spec =
            DriftSpec::new(25, std::time::Duration::from_secs(60), 4, 3, 1e-4).expect("valid");
        let names = [0, 1, 4, 5];
        let mut r = InferenceRecord::default();
        let mut first = (ModelBins::new(), BinCounts::default());
        for i in 0..200 {
            shaped_record(&mut r, &names, i, false);
            first.0.record(&r, &mut first.1, &spec, 10, (0, i as i64));
        }
        let layouts = first.0.frozen_layouts();
        assert!(layouts.len() >= 6, "features, the prediction and the label froze");
        let mut twin = Twin::new();
        for l in &layouts {
            assert!(twin.fast.0.restore(l, 10) && twin.slow.0.restore(l, 10));
        }
        // Replay partition 0 from the start, go back to offset 40 (re-armed) at step 120,
        // with events of partition 1 now and then.
        let steps = (0..120).chain(40..200);
        for (step, offset) in steps.enumerate() {
            if step == 120 {
                twin.fast.0.rearm(0);
                twin.slow.0.rearm(0);
            }
            let partition = u32::from(step % 37 == 36);
            shaped_record(&mut r, &names, offset, false);
            let src = (partition, offset as i64);
            twin.fast.0.record(&r, &mut twin.fast.1, &spec, 10, src);
            twin.slow.0.record_with::<false>(&r, &mut twin.slow.1, &spec, 10, src);
        }
        let [through_shapes, by_name] = twin.outcome();
        assert!(through_shapes.2.iter().sum::<u64>() > 0, "the replay counted");
        assert_eq!(through_shapes, by_name);
    }

    #[test]
    fn a_shape_needs_names_back_to_back_not_just_the_same_text() {
        let [through_shapes, by_name] = Twin::run((10, 4), 10, 30, |r, i| {
            r.clear();
            if i % 2 == 0 {
                r.push_feature("ab", 1.0);
                r.push_feature("c", 2.0);
            } else {
                // Text "abc" with the same ends, but the second name is "" after a "c" that
                // is the model's name.
                r.push_feature("ab", 1.0);
                r.set_model("c");
                r.push_feature("", 3.0);
            }
        });
        assert_eq!(through_shapes.0.len(), 3, "ab, c and the empty name");
        assert_eq!(through_shapes, by_name);
    }

    #[test]
    fn features_freeze_after_edge_samples_and_count_after() {
        let spec =
            DriftSpec::new(10, std::time::Duration::from_secs(60), 4, 2, 1e-4).expect("valid");
        let mut m = ModelBins::new();
        let mut bins = BinCounts::default();
        let mut r = InferenceRecord::default();
        for i in 0..15 {
            r.clear();
            r.push_feature("x", f64::from(i));
            r.push_category("c", if i % 3 == 0 { "a" } else { "b" });
            r.prediction = Some(0.5);
            m.record(&r, &mut bins, &spec, 10, (0, 0));
        }
        assert!(m.is_frozen(FeatureKind::Numeric, "x"));
        assert!(m.is_frozen(FeatureKind::Categorical, "c"));
        assert!(m.is_frozen(FeatureKind::Prediction, PREDICTION_FEATURE));
        assert!(!m.is_frozen(FeatureKind::Label, LABEL_FEATURE));
        // 5 events after freezing, each counted once per frozen feature.
        let total: u64 = bins.total();
        assert_eq!(total, 15);
        let layouts = m.frozen_layouts();
        let mut again = ModelBins::new();
        for l in &layouts {
            assert!(again.restore(l, 10));
        }
        assert_eq!(again.frozen_layouts(), layouts);
        assert_eq!(again.total_bins(), m.total_bins());
    }

    #[test]
    fn a_name_repeated_in_one_record_counts_once_with_its_last_value() {
        let spec =
            DriftSpec::new(10, std::time::Duration::from_secs(60), 4, 2, 1e-4).expect("valid");
        let mut m = ModelBins::new();
        let mut bins = BinCounts::default();
        let mut r = InferenceRecord::default();
        for i in 0..10 {
            r.clear();
            r.push_feature("x", f64::from(i));
            m.record(&r, &mut bins, &spec, 10, (0, 0));
        }
        assert!(m.is_frozen(FeatureKind::Numeric, "x"));
        r.clear();
        r.push_feature("x", -100.0);
        r.push_feature("x", 100.0);
        m.record(&r, &mut bins, &spec, 10, (0, 0));
        let mut out = Vec::new();
        bins.drain_into(&mut out);
        // One count, in the overflow bin (100 > 9), none in the underflow bin.
        assert_eq!(out.iter().sum::<u64>(), 1);
        assert_eq!(out.first(), Some(&0));
        assert_eq!(out.last(), Some(&1));
    }

    #[test]
    fn feature_cap_counts_drops() {
        let spec = DriftSpec::default();
        let mut m = ModelBins::new();
        let mut bins = BinCounts::default();
        let mut r = InferenceRecord::default();
        for f in ["a", "b", "c", "d"] {
            r.push_feature(f, 1.0);
        }
        m.record(&r, &mut bins, &spec, 2, (0, 0));
        m.record(&r, &mut bins, &spec, 2, (0, 0));
        assert_eq!(m.drops.over_feature_cap, 4);
    }

    proptest! {
        /// A compiled cell bins every finite value as its layout does, at, just below and just
        /// above every edge too.
        #[test]
        fn cells_bin_exactly_as_layouts_do(
            mut samples in prop::collection::vec(
                prop_oneof![-1e6f64..1e6, (-4i32..4).prop_map(f64::from)], 1..300),
            probes in prop::collection::vec(-2e6f64..2e6, 0..100),
            bins in 2u16..20,
        ) {
            let l = BinLayout::numeric_from_samples(&mut samples, bins);
            let BinLayout::Numeric { lower, interior, upper } = &l else { unreachable!() };
            let Some(cell) = Cell::new(*lower, interior, *upper, 7, 0) else {
                prop_assert!(interior.len() + 2 >= CELL_EDGES);
                return Ok(());
            };
            let near = |e: f64| [e.next_down(), e, e.next_up()];
            let edges = interior.iter().chain([lower, upper]).flat_map(|&e| near(e));
            let extremes = [f64::MAX, f64::MIN, f64::MIN_POSITIVE, 0.0, -0.0];
            for x in probes.into_iter().chain(edges).chain(extremes) {
                prop_assert_eq!(Some(cell.bin(x) - 7), l.numeric_bin(x), "x = {}", x);
            }
        }

        #[test]
        fn every_finite_value_has_exactly_one_bin(
            mut samples in prop::collection::vec(-1e6f64..1e6, 1..500),
            probes in prop::collection::vec(-2e6f64..2e6, 1..200),
            bins in 2u16..30,
        ) {
            let l = BinLayout::numeric_from_samples(&mut samples, bins);
            prop_assert!(l.bin_count() <= usize::from(bins) + 3);
            let BinLayout::Numeric { lower, interior, upper } = &l else { unreachable!() };
            prop_assert!(interior.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(interior.iter().all(|e| e > lower && e <= upper));
            for x in probes {
                let b = l.numeric_bin(x).expect("finite");
                prop_assert!(b < l.bin_count());
                // Monotone: a larger value never lands in a smaller bin.
                prop_assert!(l.numeric_bin(x + 1.0).expect("finite") >= b);
            }
        }
    }
}
