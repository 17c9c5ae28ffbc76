//! Interning of short strings (statuses, metric names) into dense ids, with a cap.

use rustc_hash::FxHashMap;

/// A capped string interner: the first `cap` distinct strings get their own id; later ones
/// share the overflow id, named by `overflow_name`, and are counted.
#[derive(Debug)]
pub(crate) struct Interner {
    ids: FxHashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
    cap: usize,
    overflow: u32,
    pub(crate) overflowed: u64,
}

impl Interner {
    pub(crate) fn new(cap: usize, overflow_name: &str) -> Self {
        Self {
            ids: FxHashMap::default(),
            names: vec![overflow_name.into()],
            cap,
            overflow: 0,
            overflowed: 0,
        }
    }

    #[inline]
    pub(crate) fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        if self.ids.len() >= self.cap {
            self.overflowed += 1;
            return self.overflow;
        }
        let id = self.names.len() as u32;
        self.names.push(s.into());
        self.ids.insert(s.into(), id);
        id
    }

    pub(crate) fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    pub(crate) fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |s| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_sends_the_rest_to_overflow() {
        let mut i = Interner::new(2, "__other__");
        let a = i.intern("a");
        let b = i.intern("b");
        assert_ne!(a, b);
        assert_eq!(i.intern("a"), a);
        let c = i.intern("c");
        assert_eq!(i.name(c), "__other__");
        assert_eq!(i.overflowed, 1);
        assert_eq!(i.get("c"), None);
    }
}
