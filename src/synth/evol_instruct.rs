//! Evol-Instruct (Xu et al. 2023, "WizardLM"), following `Evol_Instruct/` of nlpxucan/WizardLM
//! @cd4b4cc0 and the paper. Each input instruction starts a lineage; in each of M rounds its
//! current instruction is rewritten by one operation picked at random (four in-depth ones and
//! in-breadth, the published prompts), then the paper's elimination rules judge the result:
//!
//! 1. no information gain: the LLM judges the two instructions equal (the paper's Appendix G
//!    prompt);
//! 2. the response shows the LLM struggling: it contains "sorry" and has fewer than 80 words;
//! 3. the response holds only punctuation and stop words;
//! 4. the instruction copies words of the evolving prompt ("#Rewritten Prompt#", "given
//!    prompt", ...).
//!
//! Rules 2 and 3 need a response, so they apply only with `responses: true`. A kept evolution
//! becomes the lineage's instruction; an eliminated one is a rejected row and the lineage goes
//! on from its parent, as the paper returns failed instructions to the pool.

use std::sync::LazyLock;

use super::chat::Message;
use super::llm::{LlmClient, LlmRequest, LlmResponse};
use super::rows::SynthRow;
use crate::util::SplitMix64;

const DEPTH_BASE: &str = include_str!("prompts/evol_depth_base.txt");
const BREADTH_BASE: &str = include_str!("prompts/evol_breadth_base.txt");

/// The upstream scripts' system message.
const SYSTEM: &str = "You are a helpful assistant.";

/// Elimination rule 1's prompt (WizardLM paper, Appendix G).
const EQUAL_PROMPT: &str = "Here are two Instructions to ChatGPT AI, do you think they are equal to each other, which meet the following requirements:\n1. They have same constraints and requirments.\n2. They have same depth and breadth of the inquiry.\nThe First Prompt: {first}\nThe Second Prompt: {second}\nYour Judgement (Just answer: Equal or Not Equal. No need to explain the reason.):";

static STOP_WORDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    include_str!("../../filters/stopwords/english.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect()
});

/// An evolution operation.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// In-depth: add one more constraint or requirement.
    Constraints,
    /// In-depth: increase the depth and breadth of the inquiry.
    Deepening,
    /// In-depth: replace general concepts with more specific ones.
    Concretizing,
    /// In-depth: ask explicitly for multiple-step reasoning.
    Reasoning,
    /// In-breadth: a new, rarer prompt in the same domain.
    Breadth,
}

impl Operation {
    pub const ALL: [Operation; 5] = [
        Operation::Constraints,
        Operation::Deepening,
        Operation::Concretizing,
        Operation::Reasoning,
        Operation::Breadth,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operation::Constraints => "constraints",
            Operation::Deepening => "deepening",
            Operation::Concretizing => "concretizing",
            Operation::Reasoning => "reasoning",
            Operation::Breadth => "breadth",
        }
    }

    /// The prompt asking to evolve `instruction` (upstream's `create*Prompt`).
    pub fn prompt(self, instruction: &str) -> String {
        let method = match self {
            Operation::Constraints => include_str!("prompts/evol_method_constraints.txt"),
            Operation::Deepening => include_str!("prompts/evol_method_deepening.txt"),
            Operation::Concretizing => include_str!("prompts/evol_method_concretizing.txt"),
            Operation::Reasoning => include_str!("prompts/evol_method_reasoning.txt"),
            Operation::Breadth => {
                return format!(
                    "{BREADTH_BASE}#Given Prompt#: \r\n {instruction} \r\n#Created Prompt#:\r\n"
                );
            }
        };
        format!(
            "{}#The Given Prompt#: \r\n {instruction} \r\n#Rewritten Prompt#:\r\n",
            DEPTH_BASE.replacen("{}", method, 1)
        )
    }
}

/// Rule 4: words of the evolving prompt in the evolved instruction.
pub fn copies_prompt_words(instruction: &str) -> bool {
    let lower = instruction.to_lowercase();
    [
        "given prompt",
        "rewritten prompt",
        "created prompt",
        "#the given prompt#",
        "#rewritten prompt#",
        "#given prompt#",
        "#created prompt#",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

/// Rule 1's verdict: `Some(true)` when the judge answered "Equal", `Some(false)` for "Not Equal",
/// `None` when it said neither.
pub fn judged_equal(answer: &str) -> Option<bool> {
    let a = answer.to_lowercase();
    if a.contains("not equal") {
        Some(false)
    } else if a.contains("equal") {
        Some(true)
    } else {
        None
    }
}

/// Rule 2: "sorry" in a response of fewer than 80 words.
pub fn struggles(response: &str) -> bool {
    response.to_lowercase().contains("sorry") && response.split_whitespace().count() < 80
}

/// Rule 3: nothing but punctuation and stop words.
pub fn only_stop_words(response: &str) -> bool {
    response
        .split(|c: char| c.is_whitespace() || (c.is_ascii_punctuation() && c != '\''))
        .filter(|w| !w.is_empty())
        .all(|w| STOP_WORDS.contains(&w.to_lowercase().as_str()))
}

/// The stage's knobs (see the stage config for their docs).
#[derive(Debug, Clone)]
pub struct Settings {
    pub rounds: u32,
    pub operations: Vec<Operation>,
    pub responses: bool,
    pub max_tokens: usize,
    pub response_max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub generator: String,
}

/// One input instruction: its id and text.
pub struct Root {
    pub id: String,
    pub instruction: String,
}

fn request(prompt: &str, max_tokens: usize, s: &Settings, seed: u64) -> LlmRequest {
    LlmRequest {
        messages: vec![Message::new("system", SYSTEM), Message::new("user", prompt)],
        max_tokens,
        temperature: s.temperature,
        top_p: s.top_p,
        stop: Vec::new(),
        seed,
    }
}

/// Runs M rounds over the roots; one row per lineage and round.
pub fn run(client: &LlmClient, roots: &[Root], s: &Settings) -> Vec<SynthRow> {
    let mut rng = SplitMix64(s.seed ^ 0xe701_0001);
    let mut current: Vec<String> = roots.iter().map(|r| r.instruction.clone()).collect();
    let mut rows = Vec::new();
    for round in 1..=s.rounds {
        let seed_of =
            |i: usize, purpose: u64| s.seed ^ (u64::from(round) << 48) ^ (purpose << 40) ^ i as u64;
        let ops: Vec<Operation> = (0..roots.len())
            .map(|_| s.operations[(rng.next_u64() % s.operations.len() as u64) as usize])
            .collect();
        let evolve: Vec<LlmRequest> = (0..roots.len())
            .map(|i| request(&ops[i].prompt(&current[i]), s.max_tokens, s, seed_of(i, 1)))
            .collect();
        let evolved = client.complete_all(&evolve);
        let mut out: Vec<SynthRow> = Vec::with_capacity(roots.len());
        for (i, answer) in evolved.into_iter().enumerate() {
            let mut row = SynthRow {
                id: format!("{}-r{round}", roots[i].id),
                generator: s.generator.clone(),
                operation: ops[i].name().into(),
                round,
                parent: Some(current[i].clone()),
                root_id: Some(roots[i].id.clone()),
                ..Default::default()
            };
            match answer {
                Err(e) => row.reject_reason = Some(e.reason()),
                Ok(a) => {
                    row.instruction = a.text.trim().to_string();
                    row.prompt_hash = Some(a.key.clone());
                    row.finish_reason = Some(a.finish_reason.clone());
                    // A rewrite cut by `max_tokens` is kept, as upstream keeps whatever came
                    // back; `finish_reason` records it.
                    row.reject_reason = if row.instruction.is_empty() {
                        Some("empty_evolution".into())
                    } else if copies_prompt_words(&row.instruction) {
                        Some("copies_prompt_words".into())
                    } else {
                        None
                    };
                }
            }
            out.push(row);
        }
        // Rule 1 for the survivors.
        let alive: Vec<usize> = (0..out.len())
            .filter(|&i| out[i].reject_reason.is_none())
            .collect();
        let judge: Vec<LlmRequest> = alive
            .iter()
            .map(|&i| {
                let p = EQUAL_PROMPT
                    .replace("{first}", &current[i])
                    .replace("{second}", &out[i].instruction);
                let mut r = request(&p, 8, s, seed_of(i, 2));
                r.temperature = 0.0;
                r
            })
            .collect();
        for (&i, answer) in alive.iter().zip(client.complete_all(&judge)) {
            match answer {
                Err(e) => out[i].reject_reason = Some(format!("judge_{}", e.reason())),
                Ok(a) => {
                    if judged_equal(&a.text) == Some(true) {
                        out[i].reject_reason = Some("no_information_gain".into());
                    }
                }
            }
        }
        if s.responses {
            let alive: Vec<usize> = (0..out.len())
                .filter(|&i| out[i].reject_reason.is_none())
                .collect();
            let reqs: Vec<LlmRequest> = alive
                .iter()
                .map(|&i| request(&out[i].instruction, s.response_max_tokens, s, seed_of(i, 3)))
                .collect();
            for (&i, answer) in alive.iter().zip(client.complete_all(&reqs)) {
                let a: LlmResponse = match answer {
                    Ok(a) => a,
                    Err(e) => {
                        out[i].reject_reason = Some(format!("response_{}", e.reason()));
                        continue;
                    }
                };
                let text = a.text.trim().to_string();
                out[i].reject_reason = if struggles(&text) {
                    Some("llm_struggles".into())
                } else if only_stop_words(&text) {
                    Some("response_only_stop_words".into())
                } else {
                    None
                };
                out[i].output = Some(text);
            }
        }
        for (i, row) in out.iter().enumerate() {
            if row.reject_reason.is_none() {
                current[i] = row.instruction.clone();
            }
        }
        rows.extend(out);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_the_published_ones() {
        let p = Operation::Constraints.prompt("Name a fruit.");
        assert!(p.starts_with("I want you act as a Prompt Rewriter.\r\n"));
        assert!(
            p.contains("Please add one more constraints/requirements into #The Given Prompt#'")
        );
        assert!(p.ends_with("#The Given Prompt#: \r\n Name a fruit. \r\n#Rewritten Prompt#:\r\n"));
        assert!(!p.contains("{}"));
        let b = Operation::Breadth.prompt("Name a fruit.");
        assert!(b.starts_with("I want you act as a Prompt Creator.\r\n"));
        assert!(b.ends_with("#Given Prompt#: \r\n Name a fruit. \r\n#Created Prompt#:\r\n"));
    }

    #[test]
    fn elimination_rules() {
        assert!(copies_prompt_words("#Rewritten Prompt#: Name a red fruit."));
        assert!(copies_prompt_words("Rewrite the given prompt so that..."));
        assert!(!copies_prompt_words(
            "Name a red fruit that grows in winter."
        ));
        assert_eq!(judged_equal("Not Equal"), Some(false));
        assert_eq!(judged_equal("Equal."), Some(true));
        assert_eq!(judged_equal("Maybe"), None);
        assert!(struggles("I'm sorry, but I cannot help with that."));
        assert!(!struggles(&format!(
            "Sorry for the wait. {}",
            "word ".repeat(90)
        )));
        assert!(only_stop_words("The, and... of it!"));
        assert!(!only_stop_words("The apple is red."));
        assert_eq!(STOP_WORDS.len(), 179);
    }
}
