//! Self-Instruct (Wang et al. 2022), following its code (yizhongw/self-instruct @0b26ccaa):
//! `bootstrap_instructions.py` (prompts, parsing, filters, the ROUGE-L pool check),
//! `identify_clf_or_not.py`, `generate_instances.py` and the instance parsing and filters of
//! `prepare_for_finetuning.py`. Every candidate the model writes ends as kept rows (one per
//! instance) or one rejected row with its reason.

use std::sync::LazyLock;

use regex::Regex;

use super::llm::{Api, LlmClient, LlmRequest, LlmResponse};
use super::rouge::Pool;
use super::rows::SynthRow;
use crate::util::SplitMix64;

pub const IS_CLASSIFICATION_TEMPLATE: &str =
    include_str!("prompts/self_instruct_is_classification.txt");
pub const OUTPUT_FIRST_TEMPLATE: &str = include_str!("prompts/self_instruct_output_first_clf.txt");
pub const INPUT_FIRST_TEMPLATE: &str = include_str!("prompts/self_instruct_input_first_gen.txt");

static SPACES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\s+").expect("regex"));
static NUMBERED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\n\d+\s?\. ").expect("regex"));
static LEADING_NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\d+\s?\.\s*").expect("regex"));
static BLACKLIST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(image|images|graph|graphs|picture|pictures|file|files|map|maps|draw|plot|go to)\b",
    )
    .expect("regex")
});
static OUTPUT_LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"Output\s*\d*\s*:").expect("regex"));
static INPUT_LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"Input\s*\d*\s*:").expect("regex"));
static INPUT_PREFIX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^Input\s*\d*\s*:").expect("regex"));
static EXAMPLE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"Example\s?\d*\.?").expect("regex"));

/// `encode_prompt`: the numbered list of in-context instructions, ending at the next number.
pub fn encode_prompt(instructions: &[&str], classification: bool) -> String {
    let mut prompt = if classification {
        "Come up with a series of classification tasks. Try to specify the possible output labels when possible.\n".to_string()
    } else {
        "Come up with a series of tasks:\n".to_string()
    };
    for (i, inst) in instructions.iter().enumerate() {
        let inst = SPACES.replace_all(inst, " ");
        let inst = inst.trim().trim_end_matches(':');
        prompt.push_str(&format!("{}. {inst}\n", i + 1));
    }
    prompt.push_str(&format!("{}.", instructions.len() + 1));
    prompt
}

/// Python's `str.capitalize`: the first character upper-cased, the rest lower-cased.
pub fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

/// ROUGE-L tokens an instruction may have (four per word at 150 words).
const MAX_ROUGE_TOKENS: usize = 600;

/// A candidate instruction cut from the model's continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub text: String,
    /// Why the filters drop it (`None`: it goes on to the ROUGE-L check).
    pub reason: Option<&'static str>,
}

/// `post_process_gpt3_response` with its filters made reasons. `strip_leading_number`: chat
/// models restart the list at "1." rather than continue it, so the first item's number goes.
pub fn parse_instructions(
    text: &str,
    lowercase_rest: bool,
    strip_leading_number: bool,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (i, raw) in NUMBERED.split(text).enumerate() {
        let mut inst = SPACES.replace_all(raw, " ").trim().to_string();
        if i == 0 && strip_leading_number {
            inst = LEADING_NUMBER.replace(&inst, "").trim().to_string();
        }
        let inst = if lowercase_rest {
            capitalize(&inst)
        } else {
            let mut c = inst.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        };
        if inst.is_empty() {
            continue;
        }
        let words = inst.split_whitespace().count();
        let first = inst.chars().next().expect("non-empty");
        let reason = if words <= 3 {
            Some("too_short")
        } else if words > 150 || super::rouge::tokenize(&inst).len() > MAX_ROUGE_TOKENS {
            // 150 words, as the code has it; also 600 ROUGE tokens, which a "word" such as
            // `t0,t1,...,t999999` passes (and which the pool check would hold in memory).
            Some("too_long")
        } else if BLACKLIST.is_match(&inst) {
            Some("keyword_blacklist")
        } else if inst.starts_with("Write a program") {
            Some("write_a_program")
        } else if first.is_ascii_punctuation() {
            Some("starts_with_punctuation")
        } else if !first.is_ascii() {
            Some("starts_with_non_ascii")
        } else {
            None
        };
        out.push(Candidate { text: inst, reason });
    }
    out
}

/// The `is_classification` answer: "Yes" (any case, trailing punctuation ignored).
pub fn is_yes(answer: &str) -> bool {
    answer
        .trim()
        .trim_end_matches(|c: char| c.is_ascii_punctuation())
        .eq_ignore_ascii_case("yes")
}

fn parse_input_output(text: &str) -> (String, String) {
    let (mut input, mut output) = if OUTPUT_LABEL.is_match(text) {
        let mut parts = OUTPUT_LABEL.split(text);
        let i = parts.next().unwrap_or("").trim().to_string();
        let o = parts.next().unwrap_or("").trim().to_string();
        (i, o)
    } else {
        (String::new(), text.trim().to_string())
    };
    if INPUT_LABEL.is_match(&output) {
        output = INPUT_LABEL
            .split(&output)
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
    }
    input = INPUT_PREFIX.replace(&input, "").trim().to_string();
    (input, output)
}

/// An instance: (input, output).
pub type Instance = (String, String);

fn filter_instances(instances: Vec<Instance>) -> Vec<Instance> {
    // filter_invalid_instances
    let valid: Vec<Instance> = instances
        .into_iter()
        .filter(|(i, o)| {
            i != o && !o.is_empty() && !i.trim().ends_with(':') && !o.trim().ends_with(':')
        })
        .collect();
    // filter_duplicate_instances: the same non-empty input with different outputs drops all.
    // (In linear time: an answer may hold hundreds of thousands of examples.)
    let mut first_output: std::collections::HashMap<&str, &str> = Default::default();
    for (i, o) in &valid {
        if i.is_empty() {
            continue;
        }
        match first_output.get(i.as_str()) {
            Some(&seen) if seen != o.as_str() => return Vec::new(),
            Some(_) => {}
            None => {
                first_output.insert(i, o);
            }
        }
    }
    drop(first_output);
    let mut seen = std::collections::HashSet::new();
    valid
        .into_iter()
        .filter(|x| seen.insert(x.clone()))
        .collect()
}

/// `parse_instances_for_generation_task`.
pub fn parse_generation_instances(raw: &str, cut_by_length: bool) -> Vec<Instance> {
    let raw = raw.trim();
    let mut instances: Vec<Instance> = if EXAMPLE.is_match(raw) {
        EXAMPLE
            .split(raw)
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(parse_input_output)
            .collect()
    } else if OUTPUT_LABEL.is_match(raw) {
        vec![parse_input_output(raw)]
    } else {
        return Vec::new();
    };
    if cut_by_length {
        instances.pop();
    }
    filter_instances(instances)
}

/// `parse_instances_for_classification_task`: (input, class label) pairs.
pub fn parse_classification_instances(raw: &str, cut_by_length: bool) -> Vec<Instance> {
    if !raw.contains("Class label:") {
        return Vec::new();
    }
    let mut instances: Vec<Instance> = raw
        .split("Class label:")
        .skip(1)
        .map(|t| {
            let t = t.trim();
            match t.split_once('\n') {
                Some((label, input)) => (input.trim().to_string(), label.trim().to_string()),
                None => (String::new(), t.to_string()),
            }
        })
        .collect();
    if cut_by_length {
        instances.pop();
    }
    filter_instances(instances)
}

/// `k` distinct items of `xs`, in sampled order (partial Fisher–Yates).
pub fn sample<'a, T>(xs: &'a [T], k: usize, rng: &mut SplitMix64) -> Vec<&'a T> {
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    let k = k.min(xs.len());
    for i in 0..k {
        let j = i + (rng.next_u64() % (xs.len() - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx[..k].iter().map(|&i| &xs[i]).collect()
}

fn shuffle<T>(xs: &mut [T], rng: &mut SplitMix64) {
    for i in (1..xs.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        xs.swap(i, j);
    }
}

/// The stage's knobs (see the stage config for their docs).
#[derive(Debug, Clone)]
pub struct Settings {
    pub num_instructions: usize,
    pub max_requests: usize,
    pub prompt_instructions: usize,
    pub machine_in_prompt: usize,
    pub request_batch_size: usize,
    pub max_instances: usize,
    pub similarity_threshold: f64,
    pub lowercase_rest: bool,
    pub instruction_max_tokens: usize,
    pub instance_max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub generator: String,
}

/// What a run produced besides rows.
#[derive(Debug, Default)]
pub struct Report {
    pub requests: usize,
    pub accepted_instructions: usize,
}

/// Runs Self-Instruct from `seeds` (instruction texts) to rows.
pub fn run(
    client: &LlmClient,
    api: Api,
    seeds: &[String],
    s: &Settings,
) -> (Vec<SynthRow>, Report) {
    let mut rng = SplitMix64(s.seed ^ 0x5e1f_1257);
    let mut pool = Pool::new();
    let mut pool_texts: Vec<String> = Vec::new();
    for t in seeds {
        let ids = pool.tokens(t);
        pool.push(ids);
        pool_texts.push(t.clone());
    }
    let mut machine: Vec<String> = Vec::new();
    let mut rows: Vec<SynthRow> = Vec::new();
    let mut accepted: Vec<SynthRow> = Vec::new();
    let mut report = Report::default();
    let mut request_idx = 0usize;
    while machine.len() < s.num_instructions && request_idx < s.max_requests {
        let batch = s.request_batch_size.min(s.max_requests - request_idx);
        let mut reqs = Vec::with_capacity(batch);
        for b in 0..batch {
            let mut chosen: Vec<&str> = sample(&machine, s.machine_in_prompt, &mut rng)
                .into_iter()
                .map(String::as_str)
                .collect();
            let human = s.prompt_instructions.saturating_sub(chosen.len());
            chosen.extend(
                sample(seeds, human, &mut rng)
                    .into_iter()
                    .map(String::as_str),
            );
            shuffle(&mut chosen, &mut rng);
            let mut req = LlmRequest::user(encode_prompt(&chosen, false));
            req.max_tokens = s.instruction_max_tokens;
            req.temperature = s.temperature;
            req.top_p = s.top_p;
            req.stop = vec!["\n\n".into(), "\n16".into(), "16.".into(), "16 .".into()];
            req.seed = s.seed ^ ((request_idx + b) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            reqs.push(req);
        }
        let answers = client.complete_all(&reqs);
        for (b, answer) in answers.into_iter().enumerate() {
            let round = (request_idx + b) as u32;
            let base = SynthRow {
                generator: s.generator.clone(),
                operation: "self_instruct".into(),
                round,
                ..Default::default()
            };
            let resp = match answer {
                Ok(r) => r,
                Err(e) => {
                    rows.push(SynthRow {
                        id: format!("si-{round:06}"),
                        reject_reason: Some(e.reason()),
                        ..base
                    });
                    continue;
                }
            };
            let base = SynthRow {
                prompt_hash: Some(resp.key.clone()),
                finish_reason: Some(resp.finish_reason.clone()),
                ..base
            };
            if resp.finish_reason == "length" {
                // Upstream drops a cut continuation whole.
                rows.push(SynthRow {
                    id: format!("si-{round:06}"),
                    instruction: resp.text.clone(),
                    reject_reason: Some("response_cut_by_length".into()),
                    ..base
                });
                continue;
            }
            let candidates = parse_instructions(&resp.text, s.lowercase_rest, api == Api::Chat);
            if candidates.is_empty() {
                rows.push(SynthRow {
                    id: format!("si-{round:06}"),
                    instruction: resp.text.clone(),
                    reject_reason: Some("no_instructions_parsed".into()),
                    ..base.clone()
                });
            }
            for (c, cand) in candidates.into_iter().enumerate() {
                let mut row = SynthRow {
                    id: format!("si-{round:06}-{c:02}"),
                    instruction: cand.text.clone(),
                    ..base.clone()
                };
                if let Some(r) = cand.reason {
                    row.reject_reason = Some(r.into());
                    rows.push(row);
                    continue;
                }
                let tokens = pool.tokens(&cand.text);
                let sim = pool.compare(&tokens, 10);
                row.rouge_max = Some(sim.max);
                row.rouge_mean = Some(sim.mean);
                let top: Vec<(String, f64)> = sim
                    .top
                    .iter()
                    .map(|&(i, f)| (pool_texts[i].clone(), f))
                    .collect();
                row.most_similar = Some(serde_json::to_string(&top).expect("json"));
                if sim.max > s.similarity_threshold {
                    row.reject_reason = Some("too_similar".into());
                    rows.push(row);
                    continue;
                }
                pool.push(tokens);
                pool_texts.push(cand.text.clone());
                machine.push(cand.text.clone());
                accepted.push(row);
            }
        }
        request_idx += batch;
    }
    report.requests = request_idx;
    report.accepted_instructions = accepted.len();
    rows.extend(instances(client, accepted, s, &mut rng));
    (rows, report)
}

/// The is-classification step, then instance generation, for the accepted instructions.
fn instances(
    client: &LlmClient,
    accepted: Vec<SynthRow>,
    s: &Settings,
    rng: &mut SplitMix64,
) -> Vec<SynthRow> {
    let clf_reqs: Vec<LlmRequest> = accepted
        .iter()
        .map(|r| {
            let prompt = format!(
                "{IS_CLASSIFICATION_TEMPLATE} {}\nIs it classification?",
                r.instruction.trim()
            );
            let mut req = LlmRequest::user(prompt);
            req.max_tokens = 3;
            req.stop = vec!["\n".into(), "Task".into()];
            req
        })
        .collect();
    let clf = client.complete_all(&clf_reqs);
    let mut rows = Vec::new();
    let mut pending: Vec<(SynthRow, LlmRequest)> = Vec::new();
    for (mut row, answer) in accepted.into_iter().zip(clf) {
        match answer {
            Ok(a) => row.is_classification = Some(is_yes(&a.text)),
            Err(e) => {
                row.reject_reason = Some(format!("classification_{}", e.reason()));
                rows.push(row);
                continue;
            }
        }
        let template = if row.is_classification == Some(true) {
            OUTPUT_FIRST_TEMPLATE
        } else {
            INPUT_FIRST_TEMPLATE
        };
        let mut req = LlmRequest::user(format!("{template} {}\n", row.instruction.trim()));
        req.max_tokens = s.instance_max_tokens;
        req.stop = vec![format!("Example {}", s.max_instances + 1), "Task:".into()];
        pending.push((row, req));
    }
    let reqs: Vec<LlmRequest> = pending.iter().map(|(_, r)| r.clone()).collect();
    let answers = client.complete_all(&reqs);
    for ((row, _), answer) in pending.into_iter().zip(answers) {
        let a: LlmResponse = match answer {
            Ok(a) => a,
            Err(e) => {
                rows.push(SynthRow {
                    reject_reason: Some(format!("instances_{}", e.reason())),
                    ..row
                });
                continue;
            }
        };
        let cut = a.finish_reason == "length";
        let found = if row.is_classification == Some(true) {
            parse_classification_instances(&a.text, cut)
        } else {
            parse_generation_instances(&a.text, cut)
        };
        let chosen: Vec<&Instance> = sample(&found, s.max_instances, rng);
        if chosen.is_empty() {
            rows.push(SynthRow {
                output: Some(a.text.clone()),
                reject_reason: Some("no_valid_instances".into()),
                ..row
            });
            continue;
        }
        for (k, (input, output)) in chosen.into_iter().enumerate() {
            rows.push(SynthRow {
                id: format!("{}-{k}", row.id),
                input: Some(input.clone()),
                output: Some(output.clone()),
                finish_reason: Some(a.finish_reason.clone()),
                ..row.clone()
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_number_the_instructions_and_end_at_the_next() {
        let p = encode_prompt(&["Say  hi:", "Count\nto 3"], false);
        assert_eq!(
            p,
            "Come up with a series of tasks:\n1. Say hi\n2. Count to 3\n3."
        );
    }

    #[test]
    fn parses_the_continuation_and_gives_each_filter_its_reason() {
        let text = " Suggest a good name for a pet turtle.\n10. Draw a map of your town.\n11. Hi there\n12. Write a program that adds numbers together please.\n13. \"Quote this sentence for me now.\n14. Écris une phrase en français maintenant.";
        let c = parse_instructions(text, true, false);
        let reasons: Vec<Option<&str>> = c.iter().map(|c| c.reason).collect();
        assert_eq!(
            reasons,
            [
                None,
                Some("keyword_blacklist"),
                Some("too_short"),
                Some("write_a_program"),
                Some("starts_with_punctuation"),
                Some("starts_with_non_ascii")
            ]
        );
        assert_eq!(c[0].text, "Suggest a good name for a pet turtle.");
        // capitalize() lower-cases the rest, as upstream does.
        assert_eq!(
            parse_instructions("tell me About Paris in France", true, false)[0].text,
            "Tell me about paris in france"
        );
        // A chat model restarting the list.
        assert_eq!(
            parse_instructions("1. Name three rivers in Europe.", false, true)[0].text,
            "Name three rivers in Europe."
        );
    }

    #[test]
    fn parses_instances_like_prepare_for_finetuning() {
        let generation = "Example 1\nInput: 2 + 2\nOutput: 4\nExample 2\nInput: 3 + 3\nOutput: 6\nExample 3\nInput: 1 + 1\nOutput:";
        assert_eq!(
            parse_generation_instances(generation, false),
            vec![("2 + 2".into(), "4".into()), ("3 + 3".into(), "6".into())]
        );
        assert_eq!(parse_generation_instances(generation, true).len(), 2);
        assert_eq!(
            parse_generation_instances("Output: a haiku about rain", false),
            vec![(String::new(), "a haiku about rain".into())]
        );
        assert!(parse_generation_instances("no labels here", false).is_empty());
        let clf = "Class label: Positive\nSentence: I love it.\nClass label: Negative\nSentence: I hate it.";
        assert_eq!(
            parse_classification_instances(clf, false),
            vec![
                ("Sentence: I love it.".into(), "Positive".into()),
                ("Sentence: I hate it.".into(), "Negative".into())
            ]
        );
        // The same input with two labels is contradictory: all dropped.
        let bad = "Class label: A\nx\nClass label: B\nx";
        assert!(parse_classification_instances(bad, false).is_empty());
    }

    #[test]
    fn yes_answers_and_sampling() {
        assert!(is_yes(" Yes") && is_yes("yes.") && !is_yes("No") && !is_yes("Yes, because"));
        let mut rng = SplitMix64(1);
        let xs = [1, 2, 3, 4, 5];
        let s = sample(&xs, 3, &mut rng);
        let mut d: Vec<i32> = s.iter().map(|x| **x).collect();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 3);
        assert_eq!(sample(&xs, 9, &mut rng).len(), 5);
    }

    /// Fuzz (issue 16): model answers (mutated numbered lists and instance blocks, random
    /// bytes, long runs) go through Self-Instruct's parsers and the ROUGE-L pool check without
    /// a panic, in memory proportional to the answer.
    #[test]
    fn fuzz_model_answers() {
        let seeds: Vec<Vec<u8>> = [
            " Suggest a name for a bakery.\n10. Draw a picture of a cat.\n11. Say hi\n12. Write a program that prints.\n13. Classify the review.",
            "Example 1\nInput: a\nOutput: Crumb & Co.\nExample 2\nOutput: The Daily Loaf\nExample 3\nInput: a\nOutput: other",
            "Class label: Positive\nReview: Great bread.\nClass label: Negative\nReview: Stale bread.",
            "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        let mut pool = Pool::new();
        for seed in ["Explain how tides work.", "List five fruits that are red."] {
            let ids = pool.tokens(seed);
            pool.push(ids);
        }
        crate::fuzz::fuzz("model answers", 2000, crate::fuzz::inputs(seeds), |bytes| {
            let text = String::from_utf8_lossy(&bytes);
            let mut pool = pool.clone();
            let (_, peak) = crate::fuzz::peak_bytes(|| {
                for c in parse_instructions(&text, true, true) {
                    let ids = pool.tokens(&c.text);
                    let _ = pool.compare(&ids, 10);
                }
                for cut in [false, true] {
                    let _ = parse_generation_instances(&text, cut);
                    let _ = parse_classification_instances(&text, cut);
                }
                let _ = is_yes(&text);
            });
            crate::fuzz::within(
                "model answers",
                peak,
                256 * bytes.len() + (1 << 20),
                bytes.len(),
            )
        });
    }
}
