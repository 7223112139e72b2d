//! Tokenizer definitions and training on the Hugging Face `tokenizers` crate. A tokenizer is built
//! empty (normalizer, pre-tokenizer, decoder), documents are split into pre-tokenized words that
//! are counted shard by shard ([`WordCounter`]), and the merged counts train the model: memory
//! grows with the distinct words, not with the corpus.

use std::collections::HashMap;

use ahash::AHashMap;
use compact_str::CompactString;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::metaspace::Metaspace as MetaspaceDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::models::unigram::{Unigram, UnigramTrainer};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::{BertNormalizer, NFKC};
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::byte_level::ByteLevel as ByteLevelProcessor;
use tokenizers::{
    AddedToken, NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString,
    PreTokenizer, SplitDelimiterBehavior, Tokenizer,
};

use super::split::{byte_level, split_gpt4};
use crate::error::{GristError, Result};

/// The pre-tokenizer split of GPT-4 (`cl100k_base`), also Llama 3's: contractions, letter runs
/// with one leading non-letter, 1–3 digit groups, punctuation runs, newlines, other spaces.
pub const GPT4_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The kind of tokenizer model.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Byte-level BPE (GPT-2/GPT-4/Llama 3 style): every byte sequence encodes, no unknown token.
    #[default]
    Bpe,
    /// SentencePiece-style Unigram over NFKC text with `▁` marking spaces.
    Unigram,
    /// BERT's WordPiece (`##` continuation pieces) over BERT-normalised text.
    Wordpiece,
}

/// What to train: model kind, sizes, special tokens, splitting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenizerParams {
    /// `bpe` (byte-level), `unigram` or `wordpiece`.
    #[serde(default)]
    pub model: ModelKind,
    /// Vocabulary size, special tokens and (for `bpe`) the 256 byte symbols included.
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// A pair (`bpe`, `wordpiece`) must occur this often to be merged.
    #[serde(default = "default_min_frequency")]
    pub min_frequency: u64,
    /// Special tokens, given the first ids in this order. For `unigram` and `wordpiece` the
    /// unknown token (`<unk>` / `[UNK]`) is added when missing.
    #[serde(default = "default_special_tokens")]
    pub special_tokens: Vec<String>,
    /// `bpe` only: the regex splitting text into words before byte-level BPE (default: GPT-4's).
    #[serde(default = "default_split_pattern")]
    pub split_pattern: String,
    /// `wordpiece` only: lowercase text (BERT uncased).
    #[serde(default = "default_true")]
    pub lowercase: bool,
    /// Words (pre-tokenized pieces) longer than this many bytes are left out of training and
    /// counted in the stats. `tokenizers`' trainer is quadratic in a word's length (a run of
    /// 120,000 letters takes half a minute, a 50 MB one does not finish); real words are far
    /// shorter. Like SentencePiece's `max_sentence_length`.
    #[serde(default = "default_max_word_bytes")]
    pub max_word_bytes: usize,
}

fn default_vocab_size() -> usize {
    32_000
}
fn default_min_frequency() -> u64 {
    2
}
pub fn default_special_tokens() -> Vec<String> {
    vec!["<|endoftext|>".into()]
}
fn default_split_pattern() -> String {
    GPT4_SPLIT.into()
}
fn default_true() -> bool {
    true
}
pub fn default_max_word_bytes() -> usize {
    4096
}

impl Default for TokenizerParams {
    fn default() -> Self {
        TokenizerParams {
            model: ModelKind::Bpe,
            vocab_size: default_vocab_size(),
            min_frequency: default_min_frequency(),
            special_tokens: default_special_tokens(),
            split_pattern: default_split_pattern(),
            lowercase: true,
            max_word_bytes: default_max_word_bytes(),
        }
    }
}

impl TokenizerParams {
    /// Problems with the parameters, each as (parameter, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let floor = match self.model {
            ModelKind::Bpe => 256 + self.special_tokens.len(),
            _ => self.special_tokens.len() + 2,
        };
        if self.vocab_size < floor || self.vocab_size > 4_000_000 {
            out.push((
                "vocab_size",
                format!(
                    "`vocab_size` {} is not in {floor}..=4000000 (a {} vocabulary holds its special tokens{})",
                    self.vocab_size,
                    self.model.name(),
                    if self.model == ModelKind::Bpe { " and the 256 bytes" } else { "" }
                ),
            ));
        }
        if self.max_word_bytes == 0 {
            out.push((
                "max_word_bytes",
                "`max_word_bytes` must be at least 1".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.special_tokens {
            if t.is_empty() {
                out.push(("special_tokens", "a special token is empty".into()));
            } else if !seen.insert(t) {
                out.push((
                    "special_tokens",
                    format!("special token `{t}` is listed twice"),
                ));
            }
        }
        if self.model == ModelKind::Bpe
            && let Err(e) = onig_check(&self.split_pattern)
        {
            out.push((
                "split_pattern",
                format!("`split_pattern` is not a valid regex: {e}"),
            ));
        }
        out
    }

    /// The empty tokenizer: normalizer, pre-tokenizer, decoder and post-processor of the kind.
    pub fn empty_tokenizer(&self) -> Result<Tokenizer> {
        let err = |e: tokenizers::Error| GristError::Usage(format!("tokenizer: {e}"));
        let mut tok = match self.model {
            ModelKind::Bpe => {
                let mut tok = Tokenizer::new(BPE::default());
                let split = Split::new(
                    SplitPattern::Regex(self.split_pattern.clone()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(err)?;
                tok.with_pre_tokenizer(Some(Sequence::new(vec![
                    split.into(),
                    ByteLevel::new(false, true, false).into(),
                ])));
                tok.with_decoder(Some(ByteLevelDecoder::default()));
                tok.with_post_processor(Some(ByteLevelProcessor::new(true, false, true)));
                tok
            }
            ModelKind::Unigram => {
                let mut tok = Tokenizer::new(Unigram::default());
                tok.with_normalizer(Some(NFKC)).map_err(err)?;
                tok.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::Always, true)));
                tok.with_decoder(Some(MetaspaceDecoder::new(
                    '▁',
                    PrependScheme::Always,
                    true,
                )));
                tok
            }
            ModelKind::Wordpiece => {
                let mut tok = Tokenizer::new(WordPiece::default());
                tok.with_normalizer(Some(BertNormalizer::new(true, true, None, self.lowercase)))
                    .map_err(err)?;
                tok.with_pre_tokenizer(Some(BertPreTokenizer));
                tok.with_decoder(Some(WordPieceDecoder::new("##".into(), true)));
                tok
            }
        };
        tok.set_encode_special_tokens(false);
        Ok(tok)
    }

    /// Special tokens with the model's unknown token added (first) where it needs one.
    fn all_special_tokens(&self) -> Vec<AddedToken> {
        let mut tokens = self.special_tokens.clone();
        if let Some(unk) = self.model.unk_token()
            && !tokens.iter().any(|t| t == unk)
        {
            tokens.insert(0, unk.to_string());
        }
        tokens
            .into_iter()
            .map(|t| AddedToken::from(t, true))
            .collect()
    }

    /// Trains the model on `counts` (from [`WordCounter`]s made with this tokenizer's splitting)
    /// and returns the finished tokenizer.
    pub fn train(&self, counts: &WordCounts) -> Result<Tokenizer> {
        let err = |e: tokenizers::Error| GristError::Usage(format!("tokenizer training: {e}"));
        let mut tok = self.empty_tokenizer()?;
        let specials = self.all_special_tokens();
        let words = &counts.0;
        let added = match self.model {
            ModelKind::Bpe => {
                let trainer = BpeTrainer::builder()
                    .vocab_size(self.vocab_size)
                    .min_frequency(self.min_frequency)
                    .special_tokens(specials)
                    .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                    .show_progress(false)
                    .build();
                let mut model = BPE::default();
                let added = trainer.do_train(words, &mut model).map_err(err)?;
                tok.with_model(model);
                added
            }
            ModelKind::Wordpiece => {
                let trainer = BpeTrainer::builder()
                    .vocab_size(self.vocab_size)
                    .min_frequency(self.min_frequency)
                    .special_tokens(specials)
                    .continuing_subword_prefix("##".into())
                    .show_progress(false)
                    .build();
                let mut bpe = BPE::default();
                let added = trainer.do_train(words, &mut bpe).map_err(err)?;
                let mut model = WordPiece::from_bpe(&bpe);
                model.unk_token = "[UNK]".into();
                tok.with_model(model);
                added
            }
            ModelKind::Unigram => {
                let trainer = UnigramTrainer::builder()
                    .vocab_size(self.vocab_size.min(u32::MAX as usize) as u32)
                    .special_tokens(specials)
                    .unk_token(Some("<unk>".into()))
                    .show_progress(false)
                    .build()
                    .map_err(|e| GristError::Usage(format!("tokenizer training: {e}")))?;
                // Sorted, so training does not depend on hash-map order.
                let mut sentences: Vec<(String, u32)> = words
                    .iter()
                    .map(|(w, &c)| (w.to_string(), c.min(u32::MAX as u64) as u32))
                    .collect();
                sentences.sort_unstable();
                let mut model = Unigram::default();
                let added = trainer.do_train(sentences, &mut model).map_err(err)?;
                tok.with_model(model);
                added
            }
        };
        tok.add_special_tokens(added).map_err(err)?;
        Ok(tok)
    }
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Bpe => "bpe",
            ModelKind::Unigram => "unigram",
            ModelKind::Wordpiece => "wordpiece",
        }
    }

    fn unk_token(self) -> Option<&'static str> {
        match self {
            ModelKind::Bpe => None,
            ModelKind::Unigram => Some("<unk>"),
            ModelKind::Wordpiece => Some("[UNK]"),
        }
    }
}

/// Compiles `pattern` the way the tokenizer will (Oniguruma), so a bad one is a config error.
fn onig_check(pattern: &str) -> std::result::Result<(), String> {
    Split::new(
        SplitPattern::Regex(pattern.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// Pre-tokenized words and how often each occurs: what training needs from the corpus.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WordCounts(pub AHashMap<CompactString, u64>);

impl WordCounts {
    pub fn merge(&mut self, other: WordCounts) {
        if self.0.len() < other.0.len() {
            let mine = std::mem::replace(&mut self.0, other.0);
            self.merge(WordCounts(mine));
            return;
        }
        for (w, c) in other.0 {
            *self.0.entry(w).or_default() += c;
        }
    }

    /// The counts sorted by word: a deterministic order for files.
    pub fn sorted(&self) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self.0.iter().map(|(w, &c)| (w.as_str(), c)).collect();
        v.sort_unstable();
        v
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Writes `word \t count` lines (words are escaped as JSON strings: they may hold tabs).
    pub fn write(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        for (w, c) in self.sorted() {
            serde_json::to_writer(&mut *out, w)?;
            writeln!(out, "\t{c}")?;
        }
        Ok(())
    }

    pub fn read(input: impl std::io::BufRead) -> std::result::Result<Self, String> {
        let mut map = AHashMap::new();
        for (n, line) in input.lines().enumerate() {
            let line = line.map_err(|e| e.to_string())?;
            let (w, c) = line
                .rsplit_once('\t')
                .ok_or_else(|| format!("line {}: no tab", n + 1))?;
            let w: String = serde_json::from_str(w).map_err(|e| format!("line {}: {e}", n + 1))?;
            let c: u64 = c.parse().map_err(|e| format!("line {}: {e}", n + 1))?;
            *map.entry(CompactString::from(w)).or_default() += c;
        }
        Ok(WordCounts(map))
    }
}

/// Splits documents into the words training counts, exactly as `Tokenizer::train` (and Python's
/// `train_from_iterator`) does: normalize, pre-tokenize, take the splits.
pub struct WordCounter<'a> {
    tokenizer: &'a Tokenizer,
    /// The tokenizer has grist's default byte-level shape: split with [`split_gpt4`] directly
    /// (the same words, without `tokenizers`' per-character offset tracking).
    fast: bool,
    word: String,
    max_word_bytes: usize,
    pub counts: WordCounts,
    /// Words left out for being longer than `max_word_bytes`.
    pub too_long: LongWords,
}

/// Words left out of the counts for their length.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct LongWords {
    pub words: u64,
    pub bytes: u64,
}

impl LongWords {
    pub fn add(&mut self, other: LongWords) {
        self.words += other.words;
        self.bytes += other.bytes;
    }
}

impl<'a> WordCounter<'a> {
    /// A counter that keeps words of any length (see [`WordCounter::max_word_bytes`]).
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        let fast = default_shape(tokenizer);
        WordCounter {
            tokenizer,
            fast,
            word: String::new(),
            max_word_bytes: usize::MAX,
            counts: WordCounts::default(),
            too_long: LongWords::default(),
        }
    }

    /// Leaves words longer than `max` bytes (of the text, as split) out of the counts.
    pub fn max_word_bytes(mut self, max: usize) -> Self {
        self.max_word_bytes = max;
        self
    }

    pub fn add(&mut self, text: &str) -> Result<()> {
        let max = self.max_word_bytes;
        if self.fast {
            let (map, word, long) = (&mut self.counts.0, &mut self.word, &mut self.too_long);
            split_gpt4(text, |piece| {
                if piece.len() > max {
                    long.words += 1;
                    long.bytes += piece.len() as u64;
                    return;
                }
                word.clear();
                byte_level(piece, word);
                match map.get_mut(word.as_str()) {
                    Some(c) => *c += 1,
                    None => {
                        map.insert(CompactString::from(word.as_str()), 1);
                    }
                }
            });
            return Ok(());
        }
        let err = |e: tokenizers::Error| GristError::Usage(format!("pre-tokenizing: {e}"));
        let mut normalized = NormalizedString::from(text);
        if let Some(n) = self.tokenizer.get_normalizer() {
            n.normalize(&mut normalized).map_err(err)?;
        }
        let mut pre = PreTokenizedString::from(normalized);
        if let Some(p) = self.tokenizer.get_pre_tokenizer() {
            p.pre_tokenize(&mut pre).map_err(err)?;
        }
        let map = &mut self.counts.0;
        for (word, _, _) in pre.get_splits(OffsetReferential::Original, OffsetType::Byte) {
            if word.len() > max {
                self.too_long.words += 1;
                self.too_long.bytes += word.len() as u64;
                continue;
            }
            match map.get_mut(word) {
                Some(c) => *c += 1,
                None => {
                    map.insert(CompactString::from(word), 1);
                }
            }
        }
        Ok(())
    }
}

/// Whether `tok` splits text as grist's default byte-level BPE: no normalizer, the GPT-4 split,
/// byte-level mapping.
pub(crate) fn default_shape(tok: &Tokenizer) -> bool {
    let Ok(expected) = TokenizerParams::default().empty_tokenizer() else {
        return false;
    };
    tok.get_normalizer().is_none()
        && serde_json::to_value(tok.get_pre_tokenizer()).ok()
            == serde_json::to_value(expected.get_pre_tokenizer()).ok()
}

/// The vocabulary of a tokenizer by id (added tokens included).
pub fn vocab_by_id(tok: &Tokenizer) -> Vec<String> {
    let vocab: HashMap<String, u32> = tok.get_vocab(true);
    let mut by_id = vec![String::new(); vocab.values().max().map_or(0, |&m| m as usize + 1)];
    for (t, id) in vocab {
        by_id[id as usize] = t;
    }
    by_id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(tok: &Tokenizer, texts: &[&str]) -> WordCounts {
        let mut c = WordCounter::new(tok);
        for t in texts {
            c.add(t).unwrap();
        }
        c.counts
    }

    #[test]
    fn byte_level_words_follow_the_gpt4_split() {
        let tok = TokenizerParams::default().empty_tokenizer().unwrap();
        let c = counts(&tok, &["Hello world, it's 12345!\n\nHello"]);
        let mut words: Vec<(&str, u64)> = c.sorted();
        words.sort_by_key(|(w, _)| w.to_string());
        // Spaces become `Ġ`, newlines `Ċ`; digits split in threes; `'s` is its own word;
        // punctuation keeps the newlines after it.
        let expected = [
            ("!ĊĊ", 1),
            ("'s", 1),
            (",", 1),
            ("123", 1),
            ("45", 1),
            ("Hello", 2),
            ("Ġit", 1),
            ("Ġworld", 1),
            ("Ġ", 1),
        ];
        let mut expected: Vec<(&str, u64)> = expected.to_vec();
        expected.sort_by_key(|(w, _)| w.to_string());
        assert_eq!(words, expected);
    }

    #[test]
    fn counts_merged_from_parts_train_the_same_tokenizer() {
        let params = TokenizerParams {
            vocab_size: 300,
            min_frequency: 1,
            ..TokenizerParams::default()
        };
        let tok = params.empty_tokenizer().unwrap();
        let texts = [
            "the cat sat on the mat",
            "the dog sat on the log",
            "a cat, a dog",
        ];
        let whole = counts(&tok, &texts);
        let mut parts = counts(&tok, &texts[..1]);
        parts.merge(counts(&tok, &texts[1..]));
        assert_eq!(whole, parts);
        let a = params.train(&whole).unwrap().to_string(false).unwrap();
        let b = params.train(&parts).unwrap().to_string(false).unwrap();
        assert_eq!(a, b);
        let trained = params.train(&whole).unwrap();
        assert_eq!(trained.token_to_id("<|endoftext|>"), Some(0));
        let ids = trained.encode("the cat sat", false).unwrap();
        assert_eq!(trained.decode(ids.get_ids(), false).unwrap(), "the cat sat");
    }

    #[test]
    fn the_fast_split_counts_the_same_words_as_tokenizers() {
        let tok = TokenizerParams::default().empty_tokenizer().unwrap();
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/data/wikitext2/valid.txt"
        ))
        .unwrap();
        let mut fast = WordCounter::new(&tok);
        assert!(fast.fast);
        let mut slow = WordCounter::new(&tok);
        slow.fast = false;
        for para in text
            .split("\n\n")
            .chain(["naïve 'll ſ \u{a0}x  ", "🎉🎉  \r\n\t"])
        {
            fast.add(para).unwrap();
            slow.add(para).unwrap();
        }
        assert_eq!(fast.counts, slow.counts);
    }

    #[test]
    fn count_files_round_trip_words_with_tabs_and_newlines() {
        let mut c = WordCounts::default();
        c.0.insert("a\tb".into(), 3);
        c.0.insert("Ċ\n\"".into(), 1);
        let mut buf = Vec::new();
        c.write(&mut buf).unwrap();
        assert_eq!(WordCounts::read(&buf[..]).unwrap(), c);
    }

    #[test]
    fn unigram_and_wordpiece_train_and_round_trip() {
        for model in [ModelKind::Unigram, ModelKind::Wordpiece] {
            let params = TokenizerParams {
                model,
                vocab_size: 60,
                min_frequency: 1,
                ..TokenizerParams::default()
            };
            let tok = params.empty_tokenizer().unwrap();
            let c = counts(&tok, &["the cat sat on the mat", "the dog sat on the log"]);
            let trained = params.train(&c).unwrap();
            let enc = trained.encode("the cat", false).unwrap();
            assert!(!enc.get_ids().is_empty(), "{model:?}");
            assert!(trained.token_to_id("<|endoftext|>").is_some());
        }
    }

    #[test]
    fn bad_parameters_are_reported() {
        let p = TokenizerParams {
            vocab_size: 10,
            special_tokens: vec!["x".into(), "x".into()],
            split_pattern: "(".into(),
            ..TokenizerParams::default()
        };
        let names: Vec<&str> = p.problems().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["vocab_size", "special_tokens", "split_pattern"]);
    }
}
