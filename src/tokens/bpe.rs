//! A byte-level BPE encoder for tokenizers of grist's default shape (GPT-4 split, byte-level
//! BPE, no normalizer): the same ids as `tokenizers`' `encode`, without building an `Encoding`
//! (offsets, token strings, masks) for every document. Each piece is looked up in a cache or
//! merged pair by pair, lowest merge rank first and leftmost among equals, as `tokenizers`' BPE
//! does. Anything else falls back to `tokenizers` itself ([`FastBpe::from_tokenizer`] says which).

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use tokenizers::Tokenizer;

use super::split::{byte_chars, split_gpt4};

pub struct FastBpe {
    /// Id of each byte's byte-level character.
    byte_ids: [u32; 256],
    /// (left, right) → (rank, merged id).
    merges: FxHashMap<(u32, u32), (u32, u32)>,
}

/// Pieces already encoded, per thread; cleared when it grows past a bound.
pub type Cache = FxHashMap<Box<str>, Box<[u32]>>;
const CACHE_LIMIT: usize = 200_000;
/// Longer pieces are rare and would bloat the cache.
const CACHE_PIECE_BYTES: usize = 256;

impl FastBpe {
    /// The fast encoder when `tok` has exactly grist's default byte-level shape, else `None`.
    pub fn from_tokenizer(tok: &Tokenizer) -> Option<FastBpe> {
        if !super::tokenizer::default_shape(tok) {
            return None;
        }
        let json: serde_json::Value = serde_json::from_str(&tok.to_string(false).ok()?).ok()?;
        let model = &json["model"];
        let plain = model["type"] == "BPE"
            && model["dropout"].is_null()
            && model["unk_token"].is_null()
            && model["continuing_subword_prefix"].is_null()
            && model["end_of_word_suffix"].is_null()
            && model["byte_fallback"] == false
            && model["ignore_merges"] == false;
        // Only special added tokens: with `encode_special_tokens` they are never matched in text.
        let added_special = json["added_tokens"]
            .as_array()
            .is_some_and(|a| a.iter().all(|t| t["special"] == true));
        if !plain || !added_special {
            return None;
        }
        let vocab: HashMap<String, u32> = serde_json::from_value(model["vocab"].clone()).ok()?;
        let table = byte_chars();
        let mut byte_ids = [0u32; 256];
        for (b, id) in byte_ids.iter_mut().enumerate() {
            *id = *vocab.get(&table[b].to_string())?;
        }
        let mut merges = FxHashMap::default();
        for (rank, m) in model["merges"].as_array()?.iter().enumerate() {
            let (a, b) = match m {
                serde_json::Value::String(s) => s.split_once(' ')?,
                serde_json::Value::Array(p) => (p.first()?.as_str()?, p.get(1)?.as_str()?),
                _ => return None,
            };
            let merged = vocab.get(&format!("{a}{b}"))?;
            merges
                .entry((*vocab.get(a)?, *vocab.get(b)?))
                .or_insert((rank as u32, *merged));
        }
        Some(FastBpe { byte_ids, merges })
    }

    /// Appends the ids of `text` to `out`.
    pub fn encode(&self, text: &str, cache: &mut Cache, out: &mut Vec<u32>) {
        split_gpt4(text, |piece| {
            if let Some(ids) = cache.get(piece) {
                out.extend_from_slice(ids);
                return;
            }
            let start = out.len();
            self.encode_piece(piece.as_bytes(), out);
            if piece.len() <= CACHE_PIECE_BYTES {
                if cache.len() >= CACHE_LIMIT {
                    cache.clear();
                }
                cache.insert(piece.into(), out[start..].into());
            }
        });
    }

    fn encode_piece(&self, bytes: &[u8], out: &mut Vec<u32>) {
        let ids: Vec<u32> = bytes.iter().map(|&b| self.byte_ids[b as usize]).collect();
        match ids.len() {
            0..=SHORT => self.merge_short(ids, out),
            _ => self.merge_long(ids, out),
        }
    }

    /// Merges the lowest-ranked pair (leftmost among equals) until none is left: quadratic, and
    /// the fastest way for the short pieces text is made of.
    fn merge_short(&self, mut ids: Vec<u32>, out: &mut Vec<u32>) {
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for i in 0..ids.len().saturating_sub(1) {
                if let Some(&(rank, merged)) = self.merges.get(&(ids[i], ids[i + 1]))
                    && best.is_none_or(|(r, _, _)| rank < r)
                {
                    best = Some((rank, i, merged));
                }
            }
            let Some((_, i, merged)) = best else { break };
            ids[i] = merged;
            ids.remove(i + 1);
        }
        out.extend_from_slice(&ids);
    }

    /// The same merges in O(n log n) for long pieces (a 50 MB run of letters is one piece): a
    /// heap of candidate pairs by (rank, position) over a linked list of symbols, stale entries
    /// skipped, as `tokenizers`' `Word::merge_all` does.
    fn merge_long(&self, mut ids: Vec<u32>, out: &mut Vec<u32>) {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let n = ids.len();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::new();
        for i in 0..n - 1 {
            if let Some(&(rank, merged)) = self.merges.get(&(ids[i], ids[i + 1])) {
                heap.push(Reverse((rank, i, merged)));
            }
        }
        while let Some(Reverse((rank, i, merged))) = heap.pop() {
            let j = next[i];
            if !alive[i] || j >= n || self.merges.get(&(ids[i], ids[j])) != Some(&(rank, merged)) {
                continue;
            }
            ids[i] = merged;
            alive[j] = false;
            next[i] = next[j];
            if next[i] < n {
                prev[next[i]] = i;
            }
            let p = prev[i];
            if p < n
                && let Some(&(r, m)) = self.merges.get(&(ids[p], ids[i]))
            {
                heap.push(Reverse((r, p, m)));
            }
            if next[i] < n
                && let Some(&(r, m)) = self.merges.get(&(ids[i], ids[next[i]]))
            {
                heap.push(Reverse((r, i, m)));
            }
        }
        out.extend((0..n).filter(|&i| alive[i]).map(|i| ids[i]));
    }
}

/// Pieces up to this many bytes merge by rescanning; longer ones through a heap.
const SHORT: usize = 48;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::tokenizer::{TokenizerParams, WordCounter};

    #[test]
    fn fast_ids_equal_tokenizers_ids() {
        let params = TokenizerParams {
            vocab_size: 400,
            min_frequency: 1,
            ..TokenizerParams::default()
        };
        let empty = params.empty_tokenizer().unwrap();
        let texts = [
            "The cat sat on the mat. The dog sat on the log!\n\n",
            "aaaa aaa aa a — naïve café 數學 12345 'll 's\r\n",
        ];
        let mut counter = WordCounter::new(&empty);
        for t in texts {
            counter.add(t).unwrap();
        }
        let mut tok = params.train(&counter.counts).unwrap();
        tok.set_encode_special_tokens(true);
        let fast = FastBpe::from_tokenizer(&tok).expect("default shape");
        let mut cache = Cache::default();
        for t in texts
            .iter()
            .chain(&["unseen wörds <|endoftext|> 99999", "aaaaaaa"])
        {
            let mut ids = Vec::new();
            fast.encode(t, &mut cache, &mut ids);
            assert_eq!(ids, tok.encode_fast(*t, false).unwrap().get_ids(), "{t:?}");
        }
        // Long pieces (one 60 kB word, long digit-free symbol runs) take the heap path; both
        // paths agree with tokenizers and with each other.
        let long = "the".repeat(20_000) + " " + &"ab!".repeat(5_000);
        let mut ids = Vec::new();
        fast.encode(&long, &mut cache, &mut ids);
        assert_eq!(
            ids,
            tok.encode_fast(long.as_str(), false).unwrap().get_ids()
        );
        let mut rng = crate::util::SplitMix64(3);
        for _ in 0..300 {
            let len = 2 + (rng.next_u64() % 120) as usize;
            let piece: Vec<u8> = (0..len)
                .map(|_| b"thecatsaogl"[(rng.next_u64() % 11) as usize])
                .collect();
            let base: Vec<u32> = piece.iter().map(|&b| fast.byte_ids[b as usize]).collect();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            fast.merge_short(base.clone(), &mut a);
            fast.merge_long(base, &mut b);
            assert_eq!(a, b, "{}", String::from_utf8_lossy(&piece));
        }
        // Another shape is not taken for the fast path.
        let wp = TokenizerParams {
            model: crate::tokens::tokenizer::ModelKind::Wordpiece,
            ..params
        };
        assert!(FastBpe::from_tokenizer(&wp.empty_tokenizer().unwrap()).is_none());
    }
}
