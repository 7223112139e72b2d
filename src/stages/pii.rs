//! `pii`: e-mail and public IP anonymisation, as datatrove 0.10.1's `PIIFormatter` does it.

use std::borrow::Cow;
use std::net::Ipv4Addr;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use rayon::prelude::*;
use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::doc_filter::{Verdict, check_text_column, with_rewritten_text};
use super::{
    BuildContext, Filtered, ParamProblem, Stage, StageConfig, StageKind, Transform, TransformTask,
    text_values,
};
use crate::error::Result;
use crate::text::python;

/// Replaces e-mail addresses and public IPv4 addresses in every document's text as datatrove
/// 0.10.1's `PIIFormatter` does: the same regular expressions, the same replacement strings, and
/// the same order. Replacements are used in turn, one after the other, across the documents of
/// a task in row order (datatrove keeps one counter per formatter, so the output depends on where
/// a document sits in its task; grist reproduces that, also while it scans a batch's documents in
/// parallel). E-mails are replaced first, then IPs in the result. An IP is replaced only when
/// Python's `ipaddress` parses it (no leading zeros) and, with `only_remove_public_ips`, calls
/// it global (Python 3.11's tables: not private, not shared address space 100.64.0.0/10).
/// No document is dropped; rows with a null text pass unchanged.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Pii {
    /// Replace e-mail addresses.
    pub remove_emails: bool,
    /// Replace IPv4 addresses.
    pub remove_ips: bool,
    /// Replace only public (global) IP addresses; private, loopback, link-local and reserved
    /// ones are kept.
    pub only_remove_public_ips: bool,
    /// The replacements for e-mail addresses, used in turn.
    pub email_replacement: Vec<String>,
    /// The replacements for IP addresses, used in turn (datatrove's list of addresses that did
    /// not answer pings when it was made).
    pub ip_replacement: Vec<String>,
}

impl Default for Pii {
    fn default() -> Self {
        Pii {
            remove_emails: true,
            remove_ips: true,
            only_remove_public_ips: true,
            email_replacement: vec![
                "email@example.com".into(),
                "firstname.lastname@example.org".into(),
            ],
            ip_replacement: [
                "22.214.171.124",
                "126.96.36.199",
                "188.8.131.52",
                "184.108.40.206",
                "220.127.116.11",
                "18.104.22.168",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl StageConfig for Pii {
    const TYPE: &'static str = "pii";
    const KIND: StageKind = StageKind::Transform;

    fn check(&self) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if self.remove_emails && self.email_replacement.is_empty() {
            problems.push(ParamProblem {
                param: "email_replacement",
                message: "`email_replacement` is empty: give at least one replacement".into(),
            });
        }
        if self.remove_ips && self.ip_replacement.is_empty() {
            problems.push(ParamProblem {
                param: "ip_replacement",
                message: "`ip_replacement` is empty: give at least one replacement".into(),
            });
        }
        problems
    }

    fn build(&self, ctx: &BuildContext) -> Result<Stage> {
        Ok(Stage::Transform(Arc::new(PiiTransform {
            stage_id: ctx.stage_id.to_string(),
            config: Arc::new(self.clone()),
        })))
    }
}

/// The local part of datatrove's e-mail pattern, one character.
fn is_local_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-".contains(&b)
}

/// datatrove's e-mail pattern without its leading `\b` (checked by hand with Python's notion of
/// a word character), anchored at the start.
fn email_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(concat!(
            r"\A(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@",
            r"(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?",
            r"|\[(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}",
            r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?|[A-Za-z0-9-]*[A-Za-z0-9]:)\]))"
        ))
        .expect("valid regex")
    })
}

fn ip_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)",
        )
        .expect("valid regex")
    })
}

/// Python `re`'s `\b` before byte `at` of `text` (a character boundary).
fn python_word_boundary(text: &str, at: usize) -> bool {
    let before = text[..at].chars().next_back().is_some_and(python::is_word);
    let after = text[at..].chars().next().is_some_and(python::is_word);
    before != after
}

/// The e-mail addresses of `text`, exactly where Python's `re.sub` with datatrove's pattern
/// finds them. A match holds an `@`, and its local part is a run of local characters and dots
/// just before it; so for each `@` in turn the leftmost start in that run where the pattern
/// matches is the match Python's left-to-right scan finds.
pub fn email_matches(text: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut done = 0usize;
    for (at, _) in text.match_indices('@') {
        if at < done {
            continue;
        }
        let mut run = at;
        while run > done && (is_local_char(bytes[run - 1]) || bytes[run - 1] == b'.') {
            run -= 1;
        }
        for start in run..at {
            if !is_local_char(bytes[start]) || !python_word_boundary(text, start) {
                continue;
            }
            if let Some(m) = email_regex().find(&text[start..]) {
                out.push(start..start + m.end());
                done = start + m.end();
                break;
            }
        }
    }
    out
}

/// `ipaddress.ip_address(text)` for a dotted quad: `None` where Python raises (an octet with a
/// leading zero).
fn python_ipv4(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || (part.len() > 1 && part.starts_with('0')) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

/// Python 3.11's `IPv4Address.is_global`: outside 100.64.0.0/10 and not private
/// (`_private_networks`).
pub fn python_is_global(ip: Ipv4Addr) -> bool {
    const PRIVATE: [([u8; 4], u8); 14] = [
        ([0, 0, 0, 0], 8),
        ([10, 0, 0, 0], 8),
        ([127, 0, 0, 0], 8),
        ([169, 254, 0, 0], 16),
        ([172, 16, 0, 0], 12),
        ([192, 0, 0, 0], 29),
        ([192, 0, 0, 170], 31),
        ([192, 0, 2, 0], 24),
        ([192, 168, 0, 0], 16),
        ([198, 18, 0, 0], 15),
        ([198, 51, 100, 0], 24),
        ([203, 0, 113, 0], 24),
        ([240, 0, 0, 0], 4),
        ([255, 255, 255, 255], 32),
    ];
    let inside = |net: [u8; 4], prefix: u8| {
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        };
        u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
    };
    !inside([100, 64, 0, 0], 10) && !PRIVATE.iter().any(|&(net, p)| inside(net, p))
}

/// The IP addresses of `text` that datatrove replaces.
pub fn ip_matches(text: &str, only_public: bool) -> Vec<Range<usize>> {
    ip_regex()
        .find_iter(text)
        .filter(|m| python_ipv4(m.as_str()).is_some_and(|ip| !only_public || python_is_global(ip)))
        .map(|m| m.range())
        .collect()
}

/// `text` with each match replaced by the next replacement in turn, starting at `first`.
fn splice<'a>(
    text: &'a str,
    matches: &[Range<usize>],
    replacements: &[String],
    first: usize,
) -> Cow<'a, str> {
    if matches.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (i, m) in matches.iter().enumerate() {
        out.push_str(&text[at..m.start]);
        out.push_str(&replacements[(first + i) % replacements.len()]);
        at = m.end;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

/// Where each document's replacements start in the cycle, given where the batch starts; moves
/// `next` past the batch.
fn cycle_starts(matches: &[Vec<Range<usize>>], next: &mut usize, len: usize) -> Vec<usize> {
    matches
        .iter()
        .map(|m| {
            let start = *next;
            *next = (*next + m.len()) % len;
            start
        })
        .collect()
}

/// Every text with the matches `find` gives replaced in turn, the cycle starting at `next` and
/// moving on by document in order; matches are found in parallel, the cycle's place of each
/// document is then a running sum, and the texts are rewritten in parallel.
fn replace_in_turn<'a>(
    texts: Vec<Cow<'a, str>>,
    find: impl Fn(&str) -> Vec<Range<usize>> + Sync,
    replacements: &[String],
    next: &mut usize,
) -> Vec<Cow<'a, str>> {
    let matches: Vec<Vec<Range<usize>>> = texts.par_iter().map(|t| find(t)).collect();
    let starts = cycle_starts(&matches, next, replacements.len());
    texts
        .into_par_iter()
        .zip(&matches)
        .zip(&starts)
        .map(|((t, m), &s)| match splice(&t, m, replacements, s) {
            Cow::Borrowed(_) => t,
            Cow::Owned(o) => Cow::Owned(o),
        })
        .collect()
}

struct PiiTransform {
    stage_id: String,
    config: Arc<Pii>,
}

impl Transform for PiiTransform {
    fn start(&self, input: SchemaRef) -> Result<Box<dyn TransformTask>> {
        check_text_column(&self.stage_id, &input)?;
        Ok(Box::new(PiiTask {
            config: self.config.clone(),
            schema: input,
            next_email: 0,
            next_ip: 0,
        }))
    }
}

/// One task's formatter: its place in each replacement cycle carries over from batch to batch.
struct PiiTask {
    config: Arc<Pii>,
    schema: SchemaRef,
    next_email: usize,
    next_ip: usize,
}

impl PiiTask {
    /// The texts of a batch, anonymised; `None` for a text that did not change.
    pub fn anonymise(&mut self, texts: &[Option<&str>]) -> Vec<Option<String>> {
        let c = &self.config;
        let mut current: Vec<Cow<'_, str>> = texts
            .iter()
            .map(|t| Cow::Borrowed(t.unwrap_or("")))
            .collect();
        if c.remove_emails {
            let find = |t: &str| {
                if t.contains('@') {
                    email_matches(t)
                } else {
                    Vec::new()
                }
            };
            current = replace_in_turn(current, find, &c.email_replacement, &mut self.next_email);
        }
        if c.remove_ips {
            let only_public = c.only_remove_public_ips;
            let find = |t: &str| ip_matches(t, only_public);
            current = replace_in_turn(current, find, &c.ip_replacement, &mut self.next_ip);
        }
        current
            .into_iter()
            .map(|t| match t {
                Cow::Owned(o) => Some(o),
                Cow::Borrowed(_) => None,
            })
            .collect()
    }
}

impl TransformTask for PiiTask {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Filtered> {
        let texts = text_values(&batch)?;
        let changed = self.anonymise(&texts);
        if changed.iter().all(Option::is_none) {
            return Ok(Filtered::all_kept(batch));
        }
        let verdicts: Vec<Verdict> = changed
            .into_iter()
            .map(|c| c.map_or(Verdict::Keep, Verdict::Rewrite))
            .collect();
        Ok(Filtered::all_kept(with_rewritten_text(
            &batch, &texts, &verdicts,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> PiiTask {
        PiiTask {
            config: Arc::new(Pii::default()),
            schema: Arc::new(arrow::datatypes::Schema::empty()),
            next_email: 0,
            next_ip: 0,
        }
    }

    fn run(texts: &[&str]) -> Vec<String> {
        let mut t = task();
        let input: Vec<Option<&str>> = texts.iter().map(|s| Some(*s)).collect();
        t.anonymise(&input)
            .into_iter()
            .zip(texts)
            .map(|(c, t)| c.unwrap_or_else(|| t.to_string()))
            .collect()
    }

    #[test]
    fn replaces_emails_and_public_ips_in_turn_across_documents() {
        let out = run(&[
            "write to a.b@example.net or c@d.org",
            "no pii here",
            "x@y.io from 8.8.8.8, not 192.168.1.1 or 10.0.0.1; 1.1.1.1",
        ]);
        assert_eq!(
            out,
            [
                "write to email@example.com or firstname.lastname@example.org",
                "no pii here",
                "email@example.com from 22.214.171.124, not 192.168.1.1 or 10.0.0.1; 126.96.36.199",
            ]
        );
    }

    #[test]
    fn the_cycle_carries_over_batches_of_a_task() {
        let mut t = task();
        let first = t.anonymise(&[Some("a@b.cc")]);
        let second = t.anonymise(&[Some("c@d.ee"), Some("e@f.gg")]);
        assert_eq!(first[0].as_deref(), Some("email@example.com"));
        assert_eq!(second[0].as_deref(), Some("firstname.lastname@example.org"));
        assert_eq!(second[1].as_deref(), Some("email@example.com"));
    }

    /// Spans as pairs (an array of one `Range` reads as a range of numbers to clippy).
    fn spans(ranges: Vec<Range<usize>>) -> Vec<(usize, usize)> {
        ranges.into_iter().map(|r| (r.start, r.end)).collect()
    }

    #[test]
    fn python_word_boundaries_and_ip_parsing() {
        // `\b` before the local part: a word character before it moves the start.
        assert!(email_matches("éabc@x.com").is_empty());
        assert_eq!(spans(email_matches("_abc@x.com")), [(0, 10)]);
        assert_eq!(spans(email_matches("--abc@x.com")), [(2, 11)]);
        assert_eq!(spans(email_matches("(abc@x.com)")), [(1, 10)]);
        assert!(email_matches("a@b").is_empty());
        // Spans checked against Python `re` with the same pattern.
        assert_eq!(spans(email_matches("a@[1.2.3.4] b@[ab:]")), [(0, 11)]);
        assert_eq!(
            spans(email_matches("a@[1.2.3.4] b@[1.2.3.ab:]")),
            [(0, 11), (12, 25)]
        );
        // Leading zeros are not an address for Python; no `\b`, so digits around still match.
        assert_eq!(python_ipv4("01.2.3.4"), None);
        assert_eq!(spans(ip_matches("1234.5.6.78", true)), [(1, 11)]);
        assert_eq!(
            spans(ip_matches("100.64.0.1 100.128.0.1", true)),
            [(11, 22)]
        );
        assert!(!python_is_global("0.1.2.3".parse().unwrap()));
        assert!(python_is_global("224.0.0.1".parse().unwrap()));
        assert!(!python_is_global("192.0.0.171".parse().unwrap()));
        assert!(python_is_global("192.0.0.9".parse().unwrap()));
        assert_eq!(spans(ip_matches("192.168.1.1", false)), [(0, 11)]);
    }

    /// Every document of the shared data (C4, the benchmark pages' raw and extracted text, dolma)
    /// and a generated adversarial set, run through datatrove's `PIIFormatter` by
    /// `tests/parity/pii_goldens.py`: grist's output is byte-identical, document by document,
    /// with the replacement cycle carried across each task's batches (37 rows each here).
    #[test]
    fn equals_datatrove_pii_formatter_on_every_golden_document() {
        use sha2::Digest;
        use std::io::BufRead;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let open = |p: &std::path::Path| {
            crate::io::compress::open_read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        };
        let mut lines = open(&root.join("tests/fixtures/parity/pii.jsonl.gz")).lines();
        let meta: serde_json::Value =
            serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        let goldens: Vec<serde_json::Value> = lines
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect();
        let hex = |s: &str| {
            sha2::Sha256::digest(s.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let (mut documents, mut changed) = (0, 0);
        for task_meta in meta["_meta"]["tasks"].as_array().unwrap() {
            let task_name = task_meta["task"].as_str().unwrap();
            let rows: Vec<&serde_json::Value> = goldens
                .iter()
                .filter(|g| g["task"] == task_name && g.get("skipped").is_none())
                .collect();
            let texts: Vec<String> = match task_meta["source"].as_str() {
                None => rows
                    .iter()
                    .map(|g| g["text"].as_str().unwrap().to_string())
                    .collect(),
                Some(source) => {
                    let field = task_meta["field"].as_str().unwrap();
                    let records: Vec<serde_json::Value> =
                        open(&root.join("../shared/data").join(source))
                            .lines()
                            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
                            .collect();
                    rows.iter()
                        .map(|g| {
                            let i = g["i"].as_u64().unwrap() as usize;
                            records[i][field].as_str().unwrap().to_string()
                        })
                        .collect()
                }
            };
            assert_eq!(
                texts.len() as u64,
                task_meta["fed"].as_u64().unwrap(),
                "{task_name}"
            );
            let mut task = task();
            let mut outputs = Vec::new();
            for chunk in texts.chunks(37) {
                let input: Vec<Option<&str>> = chunk.iter().map(|t| Some(t.as_str())).collect();
                for (out, text) in task.anonymise(&input).into_iter().zip(chunk) {
                    outputs.push(out.unwrap_or_else(|| text.clone()));
                }
            }
            for ((g, text), out) in rows.iter().zip(&texts).zip(&outputs) {
                let at = format!("{task_name} #{}", g["i"]);
                assert_eq!(hex(text), g["in_sha256"].as_str().unwrap(), "{at}: input");
                if let Some(want) = g.get("out").and_then(|o| o.as_str()) {
                    assert_eq!(out, want, "{at}");
                }
                assert_eq!(hex(out), g["out_sha256"].as_str().unwrap(), "{at}: output");
                documents += 1;
                changed += usize::from(out != text);
            }
            let counters = &task_meta["final_counters"];
            assert_eq!(
                task.next_email as u64,
                counters["email"].as_u64().unwrap(),
                "{task_name}"
            );
            assert_eq!(
                task.next_ip as u64,
                counters["ip"].as_u64().unwrap(),
                "{task_name}"
            );
        }
        assert_eq!((documents, changed), (2514, 277));
    }
}
