//! Encoding documents with a `tokenizer.json`: ids, with the EOS (and optional BOS) id added.

use std::path::{Path, PathBuf};

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use tokenizers::Tokenizer;

use super::bpe::{Cache, FastBpe};

use crate::error::{GristError, Result};

/// A loaded tokenizer and the ids framing each document.
pub struct Encoder {
    tokenizer: Tokenizer,
    /// grist's own encoder when the tokenizer has its default shape (same ids, faster).
    fast: Option<FastBpe>,
    /// Tells this encoder's entries in the per-thread piece cache from another's.
    id: u64,
    path: PathBuf,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Ids run from 0 to `vocab_size - 1` (added tokens included).
    pub vocab_size: usize,
}

impl Encoder {
    /// Loads `path`; `bos` / `eos` name tokens that must be in its vocabulary. Special tokens
    /// written literally in a document are encoded as text, never as the special id (as
    /// tiktoken's `encode_ordinary`): a web page cannot end a document early.
    pub fn load(path: &Path, bos: Option<&str>, eos: Option<&str>) -> Result<Encoder> {
        let mut tokenizer = load_tokenizer(path)?;
        tokenizer.set_encode_special_tokens(true);
        let id = |name: &str, token: Option<&str>| -> Result<Option<u32>> {
            token
                .map(|t| {
                    tokenizer.token_to_id(t).ok_or_else(|| {
                        GristError::data(
                            path,
                            format!("the {name} token `{t}` is not in this tokenizer's vocabulary"),
                        )
                    })
                })
                .transpose()
        };
        let bos = id("BOS", bos)?;
        let eos = id("EOS", eos)?;
        let vocab_size = tokenizer
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1);
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Ok(Encoder {
            fast: FastBpe::from_tokenizer(&tokenizer),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            tokenizer,
            path: path.to_path_buf(),
            bos,
            eos,
            vocab_size,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The ids of `text` alone (no BOS / EOS).
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        thread_local! {
            static CACHE: RefCell<(u64, Cache)> = RefCell::new((u64::MAX, Cache::default()));
        }
        if let Some(fast) = &self.fast {
            let mut ids = Vec::with_capacity(text.len() / 3);
            CACHE.with_borrow_mut(|(owner, cache)| {
                if *owner != self.id {
                    cache.clear();
                    *owner = self.id;
                }
                fast.encode(text, cache, &mut ids);
            });
            return Ok(ids);
        }
        let enc = self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|e| GristError::data(&self.path, format!("encoding failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The document's ids: BOS, the text's ids, EOS (as configured). Also returns the number of
    /// ids of the text alone.
    pub fn encode_document(&self, text: &str) -> Result<(Vec<u32>, usize)> {
        let ids = self.encode_text(text)?;
        let n = ids.len();
        let mut out = Vec::with_capacity(n + 2);
        out.extend(self.bos);
        out.extend(ids);
        out.extend(self.eos);
        Ok((out, n))
    }
}

/// Loads a `tokenizer.json`, naming the file in the error.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    if !path.is_file() {
        return Err(GristError::data(path, "no such tokenizer file"));
    }
    let bytes = std::fs::read(path).map_err(|e| GristError::io(path, e))?;
    tokenizer_from_bytes(&bytes, path)
}

/// A tokenizer from the bytes of a `tokenizer.json` (`path` names it in errors). The JSON is
/// parsed before `tokenizers` sees it: `tokenizers` 0.23 panics (instead of erring) on a
/// syntax error inside some sections (`decoder`); any other panic of the library on a bad file
/// is caught and reported as an error too.
pub fn tokenizer_from_bytes(bytes: &[u8], path: &Path) -> Result<Tokenizer> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| GristError::data(path, format!("not a tokenizer.json (not JSON: {e})")))?;
    std::panic::catch_unwind(move || serde_json::from_value::<Tokenizer>(value))
        .map_err(|payload| {
            GristError::data(
                path,
                format!(
                    "not a tokenizer.json that loads (the tokenizers library failed on it: {})",
                    crate::error::panic_message(payload.as_ref())
                ),
            )
        })?
        .map_err(|e| GristError::data(path, format!("not a tokenizer.json that loads: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzz (issue 16): a mutated `tokenizer.json` (or random bytes) loads and encodes, or is
    /// refused naming the file; never a panic.
    #[test]
    fn fuzz_tokenizer_files() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/parity/tokenizer_c4_bpe.json");
        let seed: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        crate::fuzz::fuzz(
            "tokenizer.json",
            2000,
            crate::fuzz::json_inputs(vec![seed]),
            |bytes| {
                std::fs::write(&path, &bytes).unwrap();
                // As the `tokenize` stage loads and uses it (the fast BPE path included).
                let (result, peak) = crate::fuzz::peak_bytes(|| {
                    let e = Encoder::load(&path, None, None)?;
                    let ids = e.encode_text("Hello wörld <|endoftext|> 12345\n\n  tabs\t")?;
                    let _ = e.tokenizer().decode(&ids, false);
                    Ok::<_, GristError>(ids.len())
                });
                if let Err(e) = result
                    && !e.to_string().contains("tokenizer.json")
                {
                    return Err(format!("an error that does not name the file: {e}"));
                }
                crate::fuzz::within(
                    "tokenizer.json",
                    peak,
                    64 * bytes.len() + (16 << 20),
                    bytes.len(),
                )
            },
        );
    }
}
