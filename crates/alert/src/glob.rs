//! Model and version scopes: globs where `*` matches any run of characters (also none) and `?`
//! exactly one character; every other character matches itself. Whole-string matches only.

/// A compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    pattern: Vec<char>,
}

impl Glob {
    /// A glob of `pattern` (every string is a valid pattern).
    pub(crate) fn new(pattern: &str) -> Self {
        Self { pattern: pattern.chars().collect() }
    }

    /// Whether `text` matches the whole pattern.
    ///
    /// Iterative with backtracking to the last `*` only: linear in practice and never
    /// exponential, whatever the pattern.
    pub(crate) fn matches(&self, text: &str) -> bool {
        let p = &self.pattern;
        let t: Vec<char> = text.chars().collect();
        let (mut pi, mut ti) = (0, 0);
        // Position of the last `*` seen and the text position it was tried at.
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            match p.get(pi) {
                Some('*') => {
                    star = Some((pi, ti));
                    pi += 1;
                }
                Some(&c) if c == '?' || c == t[ti] => {
                    pi += 1;
                    ti += 1;
                }
                _ => match star {
                    // Let the last `*` swallow one more character and retry.
                    Some((sp, st)) => {
                        pi = sp + 1;
                        ti = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|&c| c == '*')
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;
    use proptest::prelude::*;

    #[test]
    fn matches_whole_strings() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("v?", "v1", true),
            ("v?", "v12", false),
            ("fraud-*", "fraud-detector", true),
            ("fraud-*", "xfraud-detector", false),
            ("*-canary", "v2-canary", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("a*b", "abab", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("", "", true),
            ("", "x", false),
            ("é?", "éü", true),
        ];
        for (p, t, want) in cases {
            assert_eq!(Glob::new(p).matches(t), want, "{p:?} vs {t:?}");
        }
    }

    /// A reference matcher: plain recursion over the definition.
    fn naive(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| naive(rest, &t[i..])),
            Some((&c, rest)) => {
                t.first().is_some_and(|&x| c == '?' || c == x) && naive(rest, &t[1..])
            }
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_definition(p in "[ab*?]{0,8}", t in "[ab]{0,10}") {
            let pc: Vec<char> = p.chars().collect();
            let tc: Vec<char> = t.chars().collect();
            prop_assert_eq!(Glob::new(&p).matches(&t), naive(&pc, &tc));
        }
    }
}
