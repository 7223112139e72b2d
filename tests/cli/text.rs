//! The spaCy English tokenizer port against spaCy 3.8.18 itself (goldens made by
//! tests/parity/spacy_goldens.py): every web document's tokens and sentence count, and seeded
//! strings built to exercise every rule.

use grist::text::spacy_en::token_texts as tokens;

use crate::util::*;

#[test]
fn tokens_and_sentences_equal_spacy_on_every_web_document() {
    let (mut compared, mut mismatches) = (0, Vec::new());
    for (text, g) in golden_documents("spacy_en_web.jsonl.gz") {
        let expected_sha = g["tokens_sha256"].as_str().unwrap();
        let text = text.as_str();
        let toks = tokens(text);
        let sha = sha256_hex(toks.join("\0").as_bytes());
        let sentences = grist::text::sentence_count(text);
        compared += 1;
        if sha != expected_sha || sentences as u64 != g["sentences"].as_u64().unwrap() {
            mismatches.push(format!(
                "{}: {} tokens (spaCy {}), {sentences} sentences (spaCy {})",
                doc_name(&g),
                toks.len(),
                g["tokens"],
                g["sentences"]
            ));
        }
    }
    for m in &mismatches {
        eprintln!("{m}");
    }
    assert_eq!(compared, 2429);
    assert!(
        mismatches.is_empty(),
        "{} documents differ",
        mismatches.len()
    );
}

#[test]
fn tokens_and_sentences_equal_spacy_on_tricky_strings() {
    let goldens = read_golden("spacy_en_tricky.jsonl.gz");
    let mut mismatches = Vec::new();
    for g in &goldens {
        let text = g["text"].as_str().unwrap();
        let expected: Vec<&str> = g["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        let got = tokens(text);
        let sentences = grist::text::sentence_count(text) as u64;
        if got != expected || sentences != g["sentences"].as_u64().unwrap() {
            mismatches.push(format!(
                "{text:?}\n  grist {got:?} ({sentences} sentences)\n  spaCy {expected:?} ({})",
                g["sentences"]
            ));
        }
    }
    for m in mismatches.iter().take(60) {
        eprintln!("{m}");
    }
    assert!(goldens.len() > 20_000);
    assert!(
        mismatches.is_empty(),
        "{} of {} strings differ",
        mismatches.len(),
        goldens.len()
    );
}
