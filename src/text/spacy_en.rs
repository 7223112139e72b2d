//! A port of spaCy 3.8's tokenizer with the blank English rules (`spacy.blank("en")`) and of
//! its `sentencizer`: what datatrove 0.10 splits English words and sentences with.
//!
//! The algorithm follows `spacy/tokenizer.pyx` step by step:
//! 1. split the text into chunks at changes between whitespace and non-whitespace
//!    (`str.isspace`); a single `' '` after a chunk is dropped, other whitespace becomes tokens;
//! 2. a chunk that is a special case (`don't` → `do`, `n't`) takes its tokens from the table;
//!    otherwise prefixes and suffixes are peeled off in turn, stopping early when the rest is a
//!    special case; the middle is a special case, a URL, or is split at infixes;
//! 3. special cases whose text the affix rules would split (`:)`, `e.g.`, `10a.m.`) are found
//!    again over the token sequence (spaCy's PhraseMatcher pass) and re-merged.
//!
//! The rule data (`tables.rs`) is generated from spaCy itself. spaCy caches chunk results; the
//! cache changes speed only, so [`EnglishTokenizer`] recomputes instead. Tests compare with
//! spaCy's output on the parity corpus and on tricky strings (tests/cli/text.rs).

use std::ops::Range;
use std::sync::LazyLock;

use super::affix::{Body, Pattern};
use super::python::{in_ranges, is_space, is_unicode_punct};
use super::tables;

/// datatrove `split_into_words(text)` for English: the spaCy token texts, without whitespace
/// tokens (datatrove strips every token and drops the empty ones). Punctuation tokens are words.
pub fn words(text: &str) -> Vec<&str> {
    let mut tokens = token_texts(text);
    tokens.retain(|t| !t.starts_with(is_space));
    tokens
}

/// The text of every spaCy token of `text`, whitespace tokens included.
pub fn token_texts(text: &str) -> Vec<&str> {
    EnglishTokenizer::get()
        .tokenize(text)
        .into_iter()
        .map(|r| &text[r])
        .collect()
}

/// `len(split_into_sentences(text))` for English: the number of sentences spaCy's sentencizer
/// finds, at least 1 (datatrove returns the whole text as one part when there are none).
pub fn sentence_count(text: &str) -> usize {
    count_sentences(token_texts(text).into_iter())
}

/// The sentencizer (`spacy/pipeline/sentencizer.pyx`): after a token whose whole text is one
/// of `punct_chars`, the next token that is neither punctuation nor such a token starts a new
/// sentence.
fn count_sentences<'a>(tokens: impl Iterator<Item = &'a str>) -> usize {
    let mut count = 1;
    let mut seen_period = false;
    for token in tokens {
        let mut chars = token.chars();
        let in_punct_chars = match (chars.next(), chars.next()) {
            (Some(c), None) => in_ranges(tables::SENTENCE_END, c),
            _ => false,
        };
        if seen_period && !in_punct_chars && !token.chars().all(is_unicode_punct) {
            count += 1;
            seen_period = false;
        } else if in_punct_chars {
            seen_period = true;
        }
    }
    count
}

/// For each ASCII character, the rules (indices, in order) whose match can begin with it; a
/// non-ASCII character tries every rule.
struct RulesByFirstChar {
    rules: &'static [Pattern],
    ascii: Vec<Vec<usize>>,
    all: Vec<usize>,
}

impl RulesByFirstChar {
    fn new(rules: &'static [Pattern]) -> Self {
        let ascii = (0u8..128)
            .map(|b| {
                let c = b as char;
                (0..rules.len())
                    .filter(|&i| match rules[i].body {
                        Body::Lit(alternatives) => alternatives.iter().any(|a| a.starts_with(c)),
                        Body::Class(class) => in_ranges(class, c),
                        Body::Dots => c == '.',
                    })
                    .collect()
            })
            .collect();
        RulesByFirstChar {
            rules,
            ascii,
            all: (0..rules.len()).collect(),
        }
    }

    fn starting_with(&self, c: char) -> impl Iterator<Item = &'static Pattern> + '_ {
        let indices = if c.is_ascii() {
            &self.ascii[c as usize]
        } else {
            &self.all
        };
        indices.iter().map(|&i| &self.rules[i])
    }
}

/// Keys are short strings: FxHash is several times faster on them than SipHash or streaming xxh3.
type FastMap<K, V> = rustc_hash::FxHashMap<K, V>;

pub struct EnglishTokenizer {
    specials: FastMap<&'static str, &'static [&'static str]>,
    prefixes: RulesByFirstChar,
    suffixes: RulesByFirstChar,
    infixes: RulesByFirstChar,
    /// Special cases the affix rules split, by their first token: (tokens, special text).
    rematch: FastMap<String, Vec<Vec<String>>>,
    url: UrlMatcher,
    /// Bytes the longest bounded suffix rule can match.
    suffix_max_len: usize,
    /// Bytes of the longest special case.
    special_max_len: usize,
}

static TOKENIZER: LazyLock<EnglishTokenizer> = LazyLock::new(EnglishTokenizer::new);

/// Chunks remembered per thread before the cache starts over.
const CHUNK_CACHE_ENTRIES: usize = 100_000;
/// Longer chunks (URLs, runs of symbols) rarely repeat and are not remembered.
const CHUNK_CACHE_MAX_LEN: usize = 64;

type ChunkCache = FastMap<Box<str>, Box<[(u32, u32)]>>;

thread_local! {
    /// Chunk text -> its tokens as byte ranges within the chunk.
    static CHUNK_CACHE: std::cell::RefCell<ChunkCache> = std::cell::RefCell::new(FastMap::default());
}

type Tokens = Vec<Range<usize>>;

impl EnglishTokenizer {
    pub fn get() -> &'static EnglishTokenizer {
        &TOKENIZER
    }

    fn new() -> Self {
        let suffix_max_len = tables::SUFFIXES
            .iter()
            .filter_map(Pattern::max_len)
            .max()
            .unwrap_or(0);
        for p in tables::SUFFIXES.iter().chain(tables::INFIXES) {
            if matches!(p.body, Body::Dots) {
                assert!(p.behind.is_empty(), "a dot-run rule with lookbehind");
            }
        }
        let mut tokenizer = EnglishTokenizer {
            specials: tables::SPECIAL_CASES.iter().copied().collect(),
            prefixes: RulesByFirstChar::new(tables::PREFIXES),
            suffixes: RulesByFirstChar::new(tables::SUFFIXES),
            infixes: RulesByFirstChar::new(tables::INFIXES),
            rematch: FastMap::default(),
            url: UrlMatcher::new(),
            suffix_max_len,
            special_max_len: tables::SPECIAL_CASES
                .iter()
                .map(|(k, _)| k.len())
                .max()
                .unwrap_or(0),
        };
        // spaCy's `add_special_case`: with `faster_heuristics`, only special cases that an affix
        // rule or a space would split go to the PhraseMatcher, as their affix-only tokens.
        let mut rematch: FastMap<String, Vec<Vec<String>>> = FastMap::default();
        for &(key, _) in tables::SPECIAL_CASES {
            if tokenizer.find_prefix(key) != 0
                || !tokenizer.find_infixes(key).is_empty()
                || tokenizer.find_suffix(key) != 0
                || key.contains(' ')
            {
                let pattern: Vec<String> = tokenizer
                    .tokenize_affixes(key, false)
                    .into_iter()
                    .map(|r| key[r].to_string())
                    .collect();
                rematch.entry(pattern[0].clone()).or_default().push(pattern);
            }
        }
        tokenizer.rematch = rematch;
        tokenizer
    }

    /// Byte ranges of the tokens of `text`, whitespace tokens included.
    pub fn tokenize(&self, text: &str) -> Tokens {
        let mut tokens = self.tokenize_affixes(text, true);
        self.apply_special_cases(text, &mut tokens);
        tokens
    }

    /// `Tokenizer._tokenize_affixes`.
    fn tokenize_affixes(&self, text: &str, with_specials: bool) -> Tokens {
        let mut tokens = Vec::new();
        let Some(first) = text.chars().next() else {
            return tokens;
        };
        let mut in_ws = is_space(first);
        let mut start = 0;
        for (i, c) in text.char_indices() {
            if is_space(c) != in_ws {
                if start < i {
                    self.tokenize_chunk(text, start..i, with_specials, &mut tokens);
                }
                start = if c == ' ' { i + 1 } else { i };
                in_ws = !in_ws;
            }
        }
        if start < text.len() {
            self.tokenize_chunk(text, start..text.len(), with_specials, &mut tokens);
        }
        tokens
    }

    fn push_special(&self, offset: usize, parts: &[&str], tokens: &mut Tokens) {
        let mut at = offset;
        for part in parts {
            tokens.push(at..at + part.len());
            at += part.len();
        }
    }

    fn special(&self, s: &str, with_specials: bool) -> Option<&'static [&'static str]> {
        // The length test keeps peeling affixes off a long chunk linear: no hashing of the rest.
        if with_specials && s.len() <= self.special_max_len {
            self.specials.get(s).copied()
        } else {
            None
        }
    }

    /// `_try_specials_and_cache` + `_tokenize` for one chunk `text[span]`.
    fn tokenize_chunk(
        &self,
        text: &str,
        span: Range<usize>,
        with_specials: bool,
        tokens: &mut Tokens,
    ) {
        let offset = span.start;
        let chunk = &text[span];
        if let Some(parts) = self.special(chunk, with_specials) {
            self.push_special(offset, parts, tokens);
            return;
        }
        // A chunk of ASCII lowercase letters only, or digits only, is one token: every prefix,
        // suffix and infix rule and the URL pattern need some other character (units split off
        // numbers only when letters follow digits). Most chunks of MinHash's simplified text are
        // such words; the token parity tests cover this path.
        let bytes = chunk.as_bytes();
        if bytes.iter().all(u8::is_ascii_lowercase) || bytes.iter().all(u8::is_ascii_digit) {
            tokens.push(offset..offset + chunk.len());
            return;
        }
        if !with_specials || chunk.len() > CHUNK_CACHE_MAX_LEN {
            self.split_chunk(chunk, offset, with_specials, tokens);
            return;
        }
        // Like spaCy, remember each chunk's tokens: words repeat, and most chunks are words.
        CHUNK_CACHE.with_borrow_mut(|cache| {
            if let Some(cached) = cache.get(chunk) {
                tokens.extend(
                    cached
                        .iter()
                        .map(|&(a, b)| a as usize + offset..b as usize + offset),
                );
                return;
            }
            let first = tokens.len();
            self.split_chunk(chunk, offset, true, tokens);
            if cache.len() >= CHUNK_CACHE_ENTRIES {
                cache.clear();
            }
            let relative = tokens[first..]
                .iter()
                .map(|r| ((r.start - offset) as u32, (r.end - offset) as u32))
                .collect();
            cache.insert(chunk.into(), relative);
        });
    }

    /// `_split_affixes` and `_attach_tokens` for the chunk `text[offset..offset + chunk.len()]`.
    fn split_chunk(&self, chunk: &str, offset: usize, with_specials: bool, tokens: &mut Tokens) {
        // `_split_affixes`: byte ranges within the chunk.
        let (mut lo, mut hi) = (0, chunk.len());
        let mut prefixes: Vec<Range<usize>> = Vec::new();
        let mut suffixes: Vec<Range<usize>> = Vec::new();
        let mut last_size = 0;
        while lo < hi && hi - lo != last_size {
            let s = &chunk[lo..hi];
            if self.special(s, with_specials).is_some() {
                break;
            }
            last_size = hi - lo;
            let pre_len = self.find_prefix(s);
            if pre_len != 0 {
                let minus_pre = &s[pre_len..];
                if !minus_pre.is_empty() && self.special(minus_pre, with_specials).is_some() {
                    prefixes.push(lo..lo + pre_len);
                    lo += pre_len;
                    break;
                }
            }
            let suf_len = self.find_suffix(&s[pre_len..]);
            if suf_len != 0 {
                let minus_suf = &s[..s.len() - suf_len];
                if !minus_suf.is_empty() && self.special(minus_suf, with_specials).is_some() {
                    suffixes.push(hi - suf_len..hi);
                    hi -= suf_len;
                    break;
                }
            }
            if pre_len != 0 && suf_len != 0 && pre_len + suf_len <= s.len() {
                prefixes.push(lo..lo + pre_len);
                suffixes.push(hi - suf_len..hi);
                lo += pre_len;
                hi -= suf_len;
            } else if pre_len != 0 {
                prefixes.push(lo..lo + pre_len);
                lo += pre_len;
            } else if suf_len != 0 {
                suffixes.push(hi - suf_len..hi);
                hi -= suf_len;
            }
        }
        // `_attach_tokens`.
        let shift = |r: Range<usize>| r.start + offset..r.end + offset;
        tokens.extend(prefixes.into_iter().map(shift));
        if lo < hi {
            let middle = &chunk[lo..hi];
            let middle_offset = offset + lo;
            if let Some(parts) = self.special(middle, with_specials) {
                self.push_special(middle_offset, parts, tokens);
            } else if self.url.is_match(middle) {
                tokens.push(middle_offset..middle_offset + middle.len());
            } else {
                let mut start = 0;
                for infix in self.find_infixes(middle) {
                    // An infix at the very start does not split (spaCy skips it).
                    if infix.start == 0 {
                        continue;
                    }
                    if infix.start != start {
                        tokens.push(middle_offset + start..middle_offset + infix.start);
                    }
                    tokens.push(middle_offset + infix.start..middle_offset + infix.end);
                    start = infix.end;
                }
                if start < middle.len() {
                    tokens.push(middle_offset + start..middle_offset + middle.len());
                }
            }
        }
        tokens.extend(suffixes.into_iter().rev().map(shift));
    }

    /// Length of the prefix of `s` (`prefix_search`: `^a|^b|…`, first rule that matches).
    fn find_prefix(&self, s: &str) -> usize {
        let Some(first) = s.chars().next() else {
            return 0;
        };
        self.prefixes
            .starting_with(first)
            .find_map(|p| p.match_at(s, 0))
            .unwrap_or(0)
    }

    /// Length of the suffix of `s` (`suffix_search`: `a$|b$|…`, the leftmost start at which
    /// some rule matches up to the end).
    fn find_suffix(&self, s: &str) -> usize {
        let n = s.len();
        // The one unbounded rule, a run of dots, matches at the start of the trailing dot run.
        let dots = s.bytes().rev().take_while(|&b| b == b'.').count();
        let dots_at = (dots >= 2).then_some(n - dots);
        let mut from = n.saturating_sub(self.suffix_max_len);
        while !s.is_char_boundary(from) {
            from += 1;
        }
        let until = dots_at.unwrap_or(n).max(from);
        for (i, c) in s[from..until].char_indices() {
            let at = from + i;
            if self
                .suffixes
                .starting_with(c)
                .any(|p| !matches!(p.body, Body::Dots) && p.matches_to_end(s, at))
            {
                return n - at;
            }
        }
        dots_at.map_or(0, |at| n - at)
    }

    /// Infix matches in `s` (`infix_finditer`: leftmost, non-overlapping, first rule wins).
    fn find_infixes(&self, s: &str) -> Vec<Range<usize>> {
        let mut found = Vec::new();
        let mut pos = 0;
        while pos < s.len() {
            let hit = s[pos..].char_indices().find_map(|(i, c)| {
                let at = pos + i;
                self.infixes
                    .starting_with(c)
                    .find_map(|p| p.match_at(s, at))
                    .map(|len| at..at + len)
            });
            match hit {
                Some(r) => {
                    pos = r.end;
                    found.push(r);
                }
                None => break,
            }
        }
        found
    }

    /// `_apply_special_cases`: find special cases over the token sequence, keep the longest
    /// (then leftmost) non-overlapping ones and replace their tokens with the special's.
    fn apply_special_cases(&self, text: &str, tokens: &mut Tokens) {
        let mut matches: Vec<Range<usize>> = Vec::new();
        for i in 0..tokens.len() {
            let Some(patterns) = self.rematch.get(&text[tokens[i].clone()]) else {
                continue;
            };
            for pattern in patterns {
                let end = i + pattern.len();
                if end <= tokens.len()
                    && pattern
                        .iter()
                        .zip(&tokens[i..end])
                        .all(|(p, t)| *p == text[t.clone()])
                {
                    matches.push(i..end);
                }
            }
        }
        if matches.is_empty() {
            return;
        }
        // `_filter_special_spans`: longest first, then lowest start; a span is kept when neither
        // its first nor its last token was covered by a span seen before it (kept or not).
        matches.sort_by(|a, b| b.len().cmp(&a.len()).then(a.start.cmp(&b.start)));
        let mut seen = vec![false; tokens.len()];
        let mut kept: Vec<Range<usize>> = Vec::new();
        for m in matches {
            if !seen[m.start] && !seen[m.end - 1] {
                kept.push(m.clone());
            }
            for s in &mut seen[m] {
                *s = true;
            }
        }
        kept.sort_by_key(|m| m.start);
        let mut out = Vec::with_capacity(tokens.len());
        let mut next = 0;
        for m in kept {
            out.extend_from_slice(&tokens[next..m.start]);
            let (from, to) = (tokens[m.start].start, tokens[m.end - 1].end);
            match self.specials.get(&text[from..to]) {
                Some(parts) => self.push_special(from, parts, &mut out),
                None => out.extend_from_slice(&tokens[m.clone()]),
            }
            next = m.end;
        }
        out.extend_from_slice(&tokens[next..]);
        *tokens = out;
    }
}

/// spaCy's `URL_MATCH` (anchored at both ends). Its only lookarounds are three negative
/// lookaheads that exclude private IPv4 ranges, so a lookaround-free copy (a superset, linear
/// time) screens every candidate and the exact pattern, with a bounded backtracking engine,
/// decides the few that pass. A host needs a dot, so chunks without one are never URLs.
/// Candidates longer than [`URL_EXACT_MAX_LEN`] take the screen's answer, so that no input can
/// make backtracking slow; they differ from spaCy only for a private-IP host with a path of
/// several kilobytes.
const URL_EXACT_MAX_LEN: usize = 4096;

struct UrlMatcher {
    screen: regex::Regex,
    exact: fancy_regex::Regex,
}

impl UrlMatcher {
    fn new() -> Self {
        let pattern = tables::URL_PATTERN;
        let mut screen = pattern.to_string();
        while let Some(at) = screen.find("(?!") {
            let close = matching_paren(&screen, at);
            screen.replace_range(at..=close, "");
        }
        UrlMatcher {
            screen: regex::Regex::new(&screen).expect("URL screen pattern compiles"),
            exact: fancy_regex::Regex::new(pattern).expect("URL pattern compiles"),
        }
    }

    fn is_match(&self, s: &str) -> bool {
        if !s.contains('.') || !self.screen.is_match(s) {
            return false;
        }
        if s.len() > URL_EXACT_MAX_LEN {
            return true;
        }
        // A backtracking limit hit (only on pathological input) counts as no match.
        self.exact.is_match(s).unwrap_or(false)
    }
}

/// Index of the `)` closing the group that opens at `open`.
fn matching_paren(s: &str, open: usize) -> usize {
    let bytes = s.as_bytes();
    let (mut depth, mut i, mut in_class) = (0, open, false);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'(' if !in_class => depth += 1,
            b')' if !in_class => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced group in the URL pattern")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_spacy() {
        // Expected outputs from spacy.blank("en") 3.8.18.
        assert_eq!(
            words("Don't stop—it's e.g. U.S. $5.00 well-known..."),
            [
                "Do", "n't", "stop", "—", "it", "'s", "e.g.", "U.S.", "$", "5.00", "well", "-",
                "known", "..."
            ]
        );
        assert_eq!(token_texts("Hello:)"), ["Hello", ":)"]);
        assert_eq!(token_texts("a  b\n"), ["a", " ", "b", "\n"]);
        assert_eq!(
            token_texts("see https://example.com/a?b=c."),
            ["see", "https://example.com/a?b=c", "."]
        );
        assert_eq!(token_texts("(10km)"), ["(", "10", "km", ")"]);
    }

    #[test]
    fn long_chunks_take_linear_time() {
        // One 1 MB chunk each; quadratic work here would take minutes in a debug build.
        let n = 1 << 20;
        assert_eq!(token_texts(&"(".repeat(n)).len(), n);
        assert_eq!(token_texts(&format!("a{}", ")".repeat(n))).len(), n + 1);
        assert_eq!(token_texts(&".".repeat(n)), [".".repeat(n)]);
        assert_eq!(token_texts(&"a-".repeat(n / 2)).len(), n - 1);
        let url = format!("http://example.com/{}", "x:@".repeat(n / 3));
        assert_eq!(token_texts(&url).len(), 1);
    }

    #[test]
    fn counts_sentences_like_the_sentencizer() {
        assert_eq!(sentence_count("One. Two! Three? \"Four.\" Five"), 5);
        assert_eq!(sentence_count("Wait... what"), 1);
        assert_eq!(sentence_count(""), 1);
        assert_eq!(sentence_count("no punctuation at all"), 1);
    }
}
