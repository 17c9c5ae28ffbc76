//! Canary pairs inferred from the `route` attribute (`stable` / `canary`) of the requests, for
//! models without a `[[canary]]` entry.
//!
//! The rule, applied to each version's latest window whose requests carried a route:
//! - A version is on the route most of those requests carried; a tie counts as `stable` (a
//!   version taking as much stable traffic as canary traffic is not a canary). Versions whose
//!   requests carry no route are left out.
//! - A model's baseline is its `stable` version with the most routed requests in that window
//!   (ties: the lowest version name). Every `canary` version of the model is paired with it, so
//!   two canaries next to one stable version make two pairs.
//! - A model with canary versions but no stable one has no pair (nothing to compare with).
//! - A version evicted or handed to another instance is forgotten.

use std::collections::BTreeMap;

use crate::eval::CanaryPair;

/// The latest routed window of every version; see the module documentation.
#[derive(Debug, Default, Clone)]
pub struct RouteInference {
    /// Per (model, version): (window end, stable requests, canary requests).
    latest: BTreeMap<(String, String), (i64, u64, u64)>,
}

impl RouteInference {
    /// An empty inference.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the route counts of one window of a version (older windows than the one held are
    /// ignored).
    pub fn observe(&mut self, model: &str, version: &str, end_ms: i64, stable: u64, canary: u64) {
        if stable + canary == 0 {
            return;
        }
        let key = (model.to_owned(), version.to_owned());
        let e = self.latest.entry(key).or_insert((i64::MIN, 0, 0));
        if end_ms >= e.0 {
            *e = (end_ms, stable, canary);
        }
    }

    /// Forgets a version (evicted, or its partition went to another instance).
    pub fn forget(&mut self, model: &str, version: &str) {
        self.latest.remove(&(model.to_owned(), version.to_owned()));
    }

    /// The inferred pairs of every model for which `configured` is false, sorted.
    pub fn pairs(&self, configured: impl Fn(&str) -> bool) -> Vec<CanaryPair> {
        // Per model: the busiest stable version, and the canary versions.
        let mut stable: BTreeMap<&str, (&str, u64)> = BTreeMap::new();
        let mut canaries: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for ((model, version), &(_, s, c)) in &self.latest {
            if configured(model) {
                continue;
            }
            if c > s {
                canaries.entry(model).or_default().push(version);
            } else {
                let best = stable.entry(model).or_insert((version, s + c));
                // Keys are visited in version order: only a busier version replaces it.
                if s + c > best.1 {
                    *best = (version, s + c);
                }
            }
        }
        let mut out = Vec::new();
        for (model, versions) in canaries {
            let Some(&(baseline, _)) = stable.get(model) else { continue };
            for canary in versions {
                out.push(CanaryPair {
                    model: model.to_owned(),
                    baseline: baseline.to_owned(),
                    canary: canary.to_owned(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(model: &str, baseline: &str, canary: &str) -> CanaryPair {
        CanaryPair { model: model.into(), baseline: baseline.into(), canary: canary.into() }
    }

    #[test]
    fn one_stable_and_one_canary_version_make_a_pair() {
        let mut r = RouteInference::new();
        r.observe("fraud", "v41", 10, 700, 0);
        r.observe("fraud", "v42", 10, 0, 300);
        r.observe("chat", "a", 10, 0, 0); // no route: left out
        assert_eq!(r.pairs(|_| false), [pair("fraud", "v41", "v42")]);
        assert!(r.pairs(|m| m == "fraud").is_empty(), "a [[canary]] entry wins");
    }

    #[test]
    fn ambiguous_routes_follow_the_documented_rule() {
        let mut r = RouteInference::new();
        // Two stable versions: the busier one is the baseline; two canaries: two pairs.
        r.observe("m", "v1", 10, 100, 0);
        r.observe("m", "v2", 10, 600, 0);
        r.observe("m", "v3", 10, 0, 50);
        r.observe("m", "v4", 10, 5, 45); // on both routes: mostly canary
        r.observe("m", "v5", 10, 20, 20); // a tie: stable, but not the busiest
        assert_eq!(r.pairs(|_| false), [pair("m", "v2", "v3"), pair("m", "v2", "v4")]);
        // An older window does not override the latest; a newer one does.
        r.observe("m", "v3", 5, 500, 0);
        assert_eq!(r.pairs(|_| false).len(), 2);
        r.observe("m", "v3", 15, 500, 0);
        assert_eq!(r.pairs(|_| false), [pair("m", "v2", "v4")]);
        // Equal traffic on two stable versions: the lowest name.
        let mut t = RouteInference::new();
        t.observe("n", "b", 10, 100, 0);
        t.observe("n", "a", 10, 100, 0);
        t.observe("n", "c", 10, 0, 9);
        assert_eq!(t.pairs(|_| false), [pair("n", "a", "c")]);
        // Only canaries: no pair; forgetting the baseline removes the pairs.
        let mut u = RouteInference::new();
        u.observe("k", "x", 10, 0, 10);
        assert!(u.pairs(|_| false).is_empty());
        r.forget("m", "v2");
        assert_eq!(r.pairs(|_| false), [pair("m", "v3", "v4")]);
    }
}
