//! The shapes of spaCy's prefix, suffix and infix rules, and how each is matched.
//!
//! spaCy compiles each rule list into one Python regex: prefixes as `^a|^b|…` (`search`),
//! suffixes as `a$|b$|…` (`search`: the leftmost position where some rule matches up to the
//! end), infixes as `a|b|…` (`finditer`). Python tries alternatives in order, so the first rule
//! that matches at a position wins, including its lookbehind and lookahead. Every rule in the
//! English lists is a literal (or an ordered alternation of literals), a single-character class,
//! or a run of two or more dots, optionally guarded by a lookbehind of one or two character
//! classes and a one-character lookahead; `tables.rs` holds them, generated from spaCy.

use super::python::in_ranges;
use super::tables::Ranges;

pub enum Body {
    /// Alternatives tried in order.
    Lit(&'static [&'static str]),
    /// One character of the class.
    Class(Ranges),
    /// `\.\.+`, greedy.
    Dots,
}

pub enum Ahead {
    Any,
    /// `(?=[…])`
    Is(Ranges),
    /// `(?![…])`: also true at the end of the string.
    Not(Ranges),
}

pub struct Pattern {
    /// `(?<=[…][…])`, one class per character, oldest first.
    pub behind: &'static [Ranges],
    pub body: Body,
    pub ahead: Ahead,
}

impl Pattern {
    fn behind_ok(&self, before: &str) -> bool {
        let mut chars = before.chars().rev();
        self.behind
            .iter()
            .rev()
            .all(|class| chars.next().is_some_and(|c| in_ranges(class, c)))
    }

    fn ahead_ok(&self, after: &str) -> bool {
        let next = after.chars().next();
        match self.ahead {
            Ahead::Any => true,
            Ahead::Is(class) => next.is_some_and(|c| in_ranges(class, c)),
            Ahead::Not(class) => !next.is_some_and(|c| in_ranges(class, c)),
        }
    }

    /// Length in bytes of this rule's match at byte `at` of `s`, as Python's backtracking
    /// matcher finds it (the first alternative whose lookahead holds).
    pub fn match_at(&self, s: &str, at: usize) -> Option<usize> {
        if !self.behind_ok(&s[..at]) {
            return None;
        }
        let rest = &s[at..];
        match self.body {
            Body::Lit(alternatives) => alternatives
                .iter()
                .find(|lit| rest.starts_with(**lit) && self.ahead_ok(&rest[lit.len()..]))
                .map(|lit| lit.len()),
            Body::Class(class) => {
                let c = rest.chars().next().filter(|&c| in_ranges(class, c))?;
                let n = c.len_utf8();
                self.ahead_ok(&rest[n..]).then_some(n)
            }
            Body::Dots => {
                let n = rest.bytes().take_while(|&b| b == b'.').count();
                // Greedy with backtracking: the longest run whose lookahead holds (all rules with
                // dots have none, so this is the whole run).
                (2..=n).rev().find(|&k| self.ahead_ok(&rest[k..]))
            }
        }
    }

    /// Whether this rule matches exactly `s[at..]` (a suffix rule anchored with `$`).
    pub fn matches_to_end(&self, s: &str, at: usize) -> bool {
        if !self.behind_ok(&s[..at]) {
            return false;
        }
        let rest = &s[at..];
        match self.body {
            Body::Lit(alternatives) => alternatives.contains(&rest),
            Body::Class(class) => {
                let mut chars = rest.chars();
                chars.next().is_some_and(|c| in_ranges(class, c)) && chars.next().is_none()
            }
            Body::Dots => rest.len() >= 2 && rest.bytes().all(|b| b == b'.'),
        }
    }

    /// The longest match this rule can make, in bytes (`None` for a dot run: unbounded).
    pub fn max_len(&self) -> Option<usize> {
        match self.body {
            Body::Lit(alternatives) => alternatives.iter().map(|l| l.len()).max(),
            Body::Class(_) => Some(4),
            Body::Dots => None,
        }
    }
}
