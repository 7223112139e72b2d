//! `url_filter`: datatrove 0.10.1's `URLFilter`: block-listed domains and URLs, banned words and
//! subwords in the URL.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use aho_corasick::AhoCorasick;
use arrow::array::{BooleanArray, RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    BuildContext, Filtered, ParamProblem, Stage, StageConfig, StageKind, Transform, TransformTask,
    string_column,
};
use crate::error::{GristError, Result};
use crate::text::{python, tld};

/// Drops documents by their URL as datatrove 0.10.1's `URLFilter` does, with its defaults, its
/// integrated lists and its reasons, checked in this order: `domain` (the registered domain, as
/// `tldextract` 5.4.0 finds it with its bundled Public Suffix List, is block-listed), `subdomain`
/// (the whole host is), `url` (the URL, exactly, is), `hard_blacklisted` (a banned word is one of
/// the URL's words: runs of ASCII letters and digits, case kept), `soft_blacklisted` (at least
/// `soft_word_threshold` distinct soft-banned words are), `blacklisted_subword` (a banned subword
/// occurs in the URL's letters and digits, lowercased). Lookups are case-sensitive, as datatrove's.
/// A row without a URL is rejected as `missing_url` (datatrove stops with an assertion error).
///
/// The integrated lists are datatrove's: 4,558,940 domains and 19,587 URLs (fetched from the
/// pinned datatrove wheel by `tests/fetch_url_lists.sh` into `lists_dir`) and its three
/// word lists (in `filters/url_filter/`). The domains are held in a finite-state transducer
/// built once beside them (`domains.<size>-<mtime>.fst`, 11 MB, memory-mapped) and shared
/// by every task and stage of a process.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UrlFilter {
    /// The column holding each document's URL.
    pub url_column: String,
    /// Soft-banned words that drop a URL (distinct words among its words).
    pub soft_word_threshold: usize,
    /// More block-listed domains (registered domains or whole hosts), as written.
    pub extra_domains: Vec<String>,
    /// More block-listed URLs, matched exactly.
    pub extra_urls: Vec<String>,
    /// More banned words (normalised: only ASCII letters and digits, lowercased).
    pub banned_words: Vec<String>,
    /// More banned subwords (normalised the same way).
    pub banned_subwords: Vec<String>,
    /// More soft-banned words (normalised the same way).
    pub soft_banned_words: Vec<String>,
    /// Use datatrove's lists besides the extra ones.
    pub use_integrated_lists: bool,
    /// Where the block lists `domains` and `urls` are. Default:
    /// `$GRIST_URL_LISTS_DIR/datatrove-0.10.1`, `GRIST_URL_LISTS_DIR` defaulting to
    /// `~/.cache/grist/url-lists` (where `tests/fetch_url_lists.sh` puts them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lists_dir: Option<String>,
}

impl Default for UrlFilter {
    fn default() -> Self {
        UrlFilter {
            url_column: "url".into(),
            soft_word_threshold: 2,
            extra_domains: Vec::new(),
            extra_urls: Vec::new(),
            banned_words: Vec::new(),
            banned_subwords: Vec::new(),
            soft_banned_words: Vec::new(),
            use_integrated_lists: true,
            lists_dir: None,
        }
    }
}

const BANNED_WORDS: &str = include_str!("../../filters/url_filter/banned_words.txt");
const BANNED_SUBWORDS: &str = include_str!("../../filters/url_filter/banned_subwords.txt");
const SOFT_BANNED_WORDS: &str = include_str!("../../filters/url_filter/soft_banned_words.txt");

/// The reason of a row without a URL.
pub const MISSING_URL: &str = "missing_url";

impl UrlFilter {
    fn lists_dir(&self) -> PathBuf {
        if let Some(dir) = &self.lists_dir {
            return PathBuf::from(dir);
        }
        let root = match std::env::var_os("GRIST_URL_LISTS_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/grist/url-lists"),
        };
        root.join("datatrove-0.10.1")
    }
}

impl StageConfig for UrlFilter {
    const TYPE: &'static str = "url_filter";
    const KIND: StageKind = StageKind::Transform;

    fn check(&self) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if self.url_column.trim().is_empty() {
            problems.push(ParamProblem {
                param: "url_column",
                message: "`url_column` is empty".into(),
            });
        }
        for (param, list) in [
            ("extra_domains", &self.extra_domains),
            ("extra_urls", &self.extra_urls),
        ] {
            if list.iter().any(|x| x.trim().is_empty()) {
                problems.push(ParamProblem {
                    param,
                    message: format!("`{param}` has an empty entry"),
                });
            }
        }
        problems
    }

    fn build(&self, ctx: &BuildContext) -> Result<Stage> {
        let integrated = if self.use_integrated_lists {
            Some(
                IntegratedLists::shared(&self.lists_dir())
                    .map_err(|e| GristError::param(ctx.stage_id, "lists_dir", e))?,
            )
        } else {
            None
        };
        Ok(Stage::Transform(Arc::new(UrlFilterTransform {
            stage_id: ctx.stage_id.to_string(),
            rules: Arc::new(Rules::new(self, integrated)),
            url_column: self.url_column.clone(),
        })))
    }
}

/// datatrove's `normalize`: ASCII letters and digits only, lowercased.
fn normalize(text: &str) -> String {
    text.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// datatrove's `parse_list` over lines: a line starting with `#` is a comment; the others are
/// normalised (words) or stripped (domains, URLs).
fn parse_list<'a>(lines: impl Iterator<Item = &'a str>, words: bool) -> HashSet<String> {
    lines
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            if words {
                normalize(l)
            } else {
                python::strip(l).to_string()
            }
        })
        .collect()
}

/// The big lists, loaded once per directory per process.
pub struct IntegratedLists {
    domains: fst::Set<Bytes>,
    urls: HashSet<String>,
}

/// The bytes of a domain set: memory-mapped from its cache file, or built in memory.
enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

impl IntegratedLists {
    /// The lists of `dir`, loaded by the first caller and shared by every later one.
    pub fn shared(dir: &Path) -> std::result::Result<Arc<IntegratedLists>, String> {
        type Loaded = Mutex<Vec<(PathBuf, Arc<IntegratedLists>)>>;
        static LOADED: OnceLock<Loaded> = OnceLock::new();
        let mut loaded = LOADED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((_, lists)) = loaded.iter().find(|(d, _)| d == dir) {
            return Ok(lists.clone());
        }
        let lists = Arc::new(Self::load(dir).map_err(|e| {
            format!(
                "{e}. The block lists are datatrove 0.10.1's (4.6 M domains, 124 MB): \
                 `bash tests/fetch_url_lists.sh` puts them in \
                 ~/.cache/grist/url-lists/datatrove-0.10.1, or set `lists_dir` (or \
                 `use_integrated_lists: false`)"
            )
        })?);
        loaded.push((dir.to_path_buf(), lists.clone()));
        Ok(lists)
    }

    fn load(dir: &Path) -> std::result::Result<IntegratedLists, String> {
        let urls_path = dir.join("urls");
        let urls = std::fs::read_to_string(&urls_path)
            .map_err(|e| format!("cannot read {}: {e}", urls_path.display()))?;
        Ok(IntegratedLists {
            domains: open_domains(&dir.join("domains"))?,
            urls: parse_list(urls.split_inclusive('\n'), false),
        })
    }
}

/// The domain set of a `domains` file: its cached transducer when there is one for this version
/// of the file, else built (and cached beside it when the directory is writable).
fn open_domains(path: &Path) -> std::result::Result<fst::Set<Bytes>, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let cache = path.with_file_name(format!("domains.{}-{mtime}.fst", meta.len()));
    if let Ok(file) = File::open(&cache) {
        // SAFETY: the cache file is written once, atomically, and never modified in place.
        if let Ok(map) = unsafe { memmap2::Mmap::map(&file) }
            && let Ok(set) = fst::Set::new(Bytes::Mapped(map))
        {
            return Ok(set);
        }
    }
    let bytes = build_domains(path)?;
    let tmp = cache.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, &bytes).is_ok() && std::fs::rename(&tmp, &cache).is_ok() {
        tracing::info!("built {}", cache.display());
    } else {
        let _ = std::fs::remove_file(&tmp);
    }
    fst::Set::new(Bytes::Owned(bytes)).map_err(|e| format!("{}: {e}", path.display()))
}

/// A transducer of the stripped, non-comment lines of `path` (sorted first when they are not).
fn build_domains(path: &Path) -> std::result::Result<Vec<u8>, String> {
    let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut builder = fst::SetBuilder::memory();
    let mut previous: Option<String> = None;
    let mut unsorted: Option<Vec<String>> = None;
    let mut line = String::new();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        if line.starts_with('#') {
            continue;
        }
        let key = python::strip(&line).to_string();
        if let Some(all) = unsorted.as_mut() {
            all.push(key);
            continue;
        }
        match previous.as_deref() {
            Some(p) if p == key => continue,
            Some(p) if p > key.as_str() => {
                // Not sorted: collect everything and sort once.
                let mut all = fst::Set::new(builder.into_inner().map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?
                    .stream()
                    .into_strs()
                    .map_err(|e| e.to_string())?;
                all.push(key);
                unsorted = Some(all);
                builder = fst::SetBuilder::memory();
                continue;
            }
            _ => {}
        }
        builder.insert(&key).map_err(|e| e.to_string())?;
        previous = Some(key);
    }
    if let Some(mut all) = unsorted {
        all.sort_unstable();
        all.dedup();
        builder = fst::SetBuilder::memory();
        for key in &all {
            builder.insert(key).map_err(|e| e.to_string())?;
        }
    }
    builder.into_inner().map_err(|e| e.to_string())
}

/// Everything one filter checks, built once per stage.
pub struct Rules {
    integrated: Option<Arc<IntegratedLists>>,
    extra_domains: HashSet<String>,
    extra_urls: HashSet<String>,
    banned_words: HashSet<String>,
    soft_banned_words: HashSet<String>,
    subwords: Option<AhoCorasick>,
    soft_word_threshold: usize,
}

impl Rules {
    pub fn new(config: &UrlFilter, integrated: Option<Arc<IntegratedLists>>) -> Self {
        let extra =
            |list: &[String], words: bool| parse_list(list.iter().map(String::as_str), words);
        let mut banned_words = extra(&config.banned_words, true);
        let mut banned_subwords = extra(&config.banned_subwords, true);
        let mut soft_banned_words = extra(&config.soft_banned_words, true);
        if integrated.is_some() {
            banned_words.extend(parse_list(BANNED_WORDS.split_inclusive('\n'), true));
            banned_subwords.extend(parse_list(BANNED_SUBWORDS.split_inclusive('\n'), true));
            soft_banned_words.extend(parse_list(SOFT_BANNED_WORDS.split_inclusive('\n'), true));
        }
        let mut subwords: Vec<String> = banned_subwords.into_iter().collect();
        subwords.sort();
        Rules {
            integrated,
            extra_domains: extra(&config.extra_domains, false),
            extra_urls: extra(&config.extra_urls, false),
            banned_words,
            soft_banned_words,
            subwords: (!subwords.is_empty())
                .then(|| AhoCorasick::new(&subwords).expect("word patterns build")),
            soft_word_threshold: config.soft_word_threshold,
        }
    }

    fn listed_domain(&self, domain: &str) -> bool {
        self.extra_domains.contains(domain)
            || self
                .integrated
                .as_ref()
                .is_some_and(|l| l.domains.contains(domain))
    }

    fn listed_url(&self, url: &str) -> bool {
        self.extra_urls.contains(url)
            || self
                .integrated
                .as_ref()
                .is_some_and(|l| l.urls.contains(url))
    }

    /// Why `url` is dropped; `None` when it is kept.
    pub fn judge(&self, url: &str) -> Option<&'static str> {
        let parts = tld::extract(url);
        if self.listed_domain(&parts.registered_domain()) {
            return Some("domain");
        }
        if self.listed_domain(&parts.fqdn()) {
            return Some("subdomain");
        }
        if self.listed_url(url) {
            return Some("url");
        }
        let words: HashSet<&str> = url.split(|c: char| !c.is_ascii_alphanumeric()).collect();
        if self.banned_words.iter().any(|w| words.contains(w.as_str())) {
            return Some("hard_blacklisted");
        }
        let soft = self
            .soft_banned_words
            .iter()
            .filter(|w| words.contains(w.as_str()))
            .count();
        if soft >= self.soft_word_threshold {
            return Some("soft_blacklisted");
        }
        if let Some(subwords) = &self.subwords
            && subwords.is_match(&normalize(url))
        {
            return Some("blacklisted_subword");
        }
        None
    }
}

struct UrlFilterTransform {
    stage_id: String,
    rules: Arc<Rules>,
    url_column: String,
}

impl Transform for UrlFilterTransform {
    fn start(&self, input: SchemaRef) -> Result<Box<dyn TransformTask>> {
        if input.field_with_name(&self.url_column).is_err() {
            return Err(GristError::stage(
                &self.stage_id,
                format!(
                    "the input has no `{}` column (set `url_column`)",
                    self.url_column
                ),
            ));
        }
        Ok(Box::new(UrlFilterTask {
            rules: self.rules.clone(),
            url_column: self.url_column.clone(),
            schema: input,
        }))
    }
}

struct UrlFilterTask {
    rules: Arc<Rules>,
    url_column: String,
    schema: SchemaRef,
}

impl TransformTask for UrlFilterTask {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Filtered> {
        let urls = string_column(&batch, &self.url_column)?
            .ok_or_else(|| GristError::Usage(format!("no `{}` column", self.url_column)))?;
        let reasons: Vec<Option<&'static str>> = (0..batch.num_rows())
            .into_par_iter()
            .map(|i| {
                use arrow::array::Array;
                match urls.is_valid(i).then(|| urls.value(i)) {
                    Some(url) if !url.is_empty() => self.rules.judge(url),
                    _ => Some(MISSING_URL),
                }
            })
            .collect();
        if reasons.iter().all(Option::is_none) {
            return Ok(Filtered::all_kept(batch));
        }
        let keep = BooleanArray::from(reasons.iter().map(Option::is_none).collect::<Vec<_>>());
        let reasons = StringArray::from_iter_values(reasons.into_iter().flatten());
        Filtered::split(&batch, &keep, reasons)
    }
}

/// Reads the lists a test needs from the shared cache, fetching them first when missing.
#[cfg(test)]
pub(crate) fn test_lists() -> Arc<IntegratedLists> {
    let dir = UrlFilter::default().lists_dir();
    static FETCH: Mutex<()> = Mutex::new(());
    let _one = FETCH.lock().unwrap_or_else(|p| p.into_inner());
    if !dir.join("domains").is_file() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fetch_url_lists.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "cannot fetch the URL lists ({}): {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    IntegratedLists::shared(&dir).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_subwords_and_soft_words_with_extra_lists() {
        let config = UrlFilter {
            use_integrated_lists: false,
            extra_domains: vec!["bad.com".into(), "x.ok.org".into()],
            extra_urls: vec!["ok.org/exact".into()],
            banned_words: vec!["Porn".into()],
            banned_subwords: vec!["big black".into()],
            soft_banned_words: vec!["nude".into(), "webcam".into()],
            ..UrlFilter::default()
        };
        let rules = Rules::new(&config, None);
        let cases = [
            ("http://www.bad.com/", Some("domain")),
            ("http://x.ok.org/", Some("subdomain")),
            ("http://y.x.ok.org/", None),
            ("ok.org/exact", Some("url")),
            ("http://ok.org/porn/x", Some("hard_blacklisted")),
            ("http://ok.org/PORN/x", None),
            ("http://ok.org/nude/webcam", Some("soft_blacklisted")),
            ("http://ok.org/nude/nude", None),
            ("http://ok.org/Big-Black/", Some("blacklisted_subword")),
            ("http://BAD.COM/", None),
        ];
        for (url, want) in cases {
            assert_eq!(rules.judge(url), want, "{url}");
        }
    }

    /// Every URL of the shared data (C4, the benchmark pages and their WARCs, dolma) and 438
    /// adversarial ones, judged by datatrove's `URLFilter` with its integrated lists
    /// (`tests/parity/url_filter_goldens.py`): the same tldextract split, the same decision and
    /// the same reason on each; the one empty URL (datatrove's assertion error) is `missing_url`.
    #[test]
    fn equals_datatrove_url_filter_on_every_golden_url() {
        use std::io::BufRead;
        let rules = Rules::new(&UrlFilter::default(), Some(test_lists()));
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity/url_filter.jsonl.gz");
        let reader = crate::io::compress::open_read(&path).unwrap();
        let (mut urls, mut dropped) = (0, 0);
        for line in reader.lines() {
            let g: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            if g.get("_meta").is_some() {
                continue;
            }
            let url = g["url"].as_str().unwrap();
            urls += 1;
            if g.get("error").is_some() {
                assert!(url.is_empty(), "{g}");
                continue;
            }
            let e = tld::extract(url);
            let want_tld: Vec<&str> = g["tld"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(
                [e.subdomain.as_str(), &e.domain, &e.suffix],
                want_tld[..],
                "{url}"
            );
            let want = g["reason"].as_str();
            assert_eq!(rules.judge(url), want, "{url}");
            assert_eq!(g["keep"].as_bool().unwrap(), want.is_none());
            dropped += usize::from(want.is_some());
        }
        assert_eq!((urls, dropped), (2078, 238));
    }
}
