//! `minhash_dedup` and `exact_dedup`: parity with datatrove 0.10.1's MinHash stages (goldens made
//! by tests/parity/minhash_goldens.py), LSH candidate rates against exact Jaccard similarity,
//! idempotence, and the barrier phases under the engine.

use std::collections::{HashMap, HashSet};

use grist::dedup::minhash::{MinHasher, ShingleHash};
use grist::dedup::simplify::simplify_text;

use crate::util::*;

/// The parity corpus in order: (id, text).
fn parity_corpus() -> Vec<(String, String)> {
    let mut web = source_texts();
    let clough: Vec<String> = std::fs::read_to_string(
        shared_data().join("neardup_clough_stevenson/clough_stevenson.jsonl"),
    )
    .unwrap()
    .lines()
    .map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        v["text"].as_str().unwrap().to_string()
    })
    .collect();
    read_golden("minhash_corpus.jsonl.gz")
        .into_iter()
        .map(|d| {
            let id = d["id"].as_str().unwrap().to_string();
            let text = match d["origin"].as_str().unwrap() {
                "web_en" => web
                    .remove(&(
                        d["file"].as_str().unwrap().to_string(),
                        d["record"].as_u64().unwrap(),
                        d["field"].as_str().unwrap().to_string(),
                    ))
                    .unwrap(),
                "clough" => clough[d["line"].as_u64().unwrap() as usize].clone(),
                _ => d["text"].as_str().unwrap().to_string(),
            };
            (id, text)
        })
        .collect()
}

fn write_corpus(s: &Scratch, rel: &str, docs: &[(String, String)]) {
    let mut body = String::new();
    for (id, text) in docs {
        body.push_str(&serde_json::json!({"id": id, "text": text}).to_string());
        body.push('\n');
    }
    s.write(rel, body);
}

fn u64s_sha256(values: &[u64]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    sha256_hex(bytes)
}

#[test]
fn signatures_and_removals_match_datatrove() {
    let corpus = parity_corpus();
    let golden = read_golden("minhash_datatrove.jsonl.gz");
    let (header, docs) = golden.split_first().unwrap();
    assert_eq!(docs.len(), corpus.len());
    assert_eq!(corpus.len(), 3123, "the README's parity corpus");
    let hasher = MinHasher::new(5, 112, 1, ShingleHash::Xxhash);
    let (a, b) = hasher.parameters();
    let as_u64 = |v: &serde_json::Value| -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    };
    assert_eq!(a, as_u64(&header["a"]).as_slice());
    assert_eq!(b, as_u64(&header["b"]).as_slice());

    // Every step, document by document.
    let mut misses = Vec::new();
    for ((id, text), g) in corpus.iter().zip(docs) {
        assert_eq!(id, g["id"].as_str().unwrap());
        let simplified = simplify_text(text);
        let words = grist::text::words(&simplified);
        let sig = hasher.signature(text);
        let step = if sha256_hex(&simplified) != g["simplified_sha256"] {
            "simplified text"
        } else if sha256_hex(words.join("\n")) != g["words_sha256"] {
            "words"
        } else if sig.as_deref().map(u64s_sha256)
            != g["signature_sha256"].as_str().map(String::from)
        {
            "signature"
        } else {
            continue;
        };
        misses.push(format!("{id}: {step} differs"));
    }
    eprintln!("minhash: {} documents, {} differ", docs.len(), misses.len());
    assert!(
        misses.is_empty(),
        "signatures differ from datatrove's:\n{}",
        misses.join("\n")
    );

    // The stage: which documents it removes.
    let s = Scratch::new();
    write_corpus(&s, "in/corpus.jsonl", &corpus);
    s.write(
        "p.yaml",
        "name: mh\nworkdir: work\nstages:\n  \
         - {id: docs, type: read_jsonl, path: in}\n  \
         - {id: dedup, type: minhash_dedup}\n  \
         - {id: out, type: write_parquet, path: out, rejects: rejects}\n",
    );
    let plan = s.grist(&["plan", "p.yaml"]);
    let plan = text(&plan);
    for phase in [
        "phase `stream`: 1 task(s)",
        "phase `dedup.signatures`: 1 task(s)",
        "phase `dedup.buckets`: 14 task(s)",
        "phase `dedup.clusters`: 1 task(s)",
        "phase `dedup.filter`: 1 task(s)",
    ] {
        assert!(plan.contains(phase), "{plan}");
    }
    assert_ok(&s.grist(&["run", "p.yaml"]));
    let ours: HashSet<String> = read_rows(&s.path("rejects/dedup"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let theirs: HashSet<String> = docs
        .iter()
        .filter(|g| g["removed"].as_bool().unwrap())
        .map(|g| g["id"].as_str().unwrap().to_string())
        .collect();
    let same = ours.intersection(&theirs).count();
    let union = ours.union(&theirs).count();
    eprintln!(
        "minhash_dedup: grist removes {}, datatrove {}, {same} the same",
        ours.len(),
        theirs.len()
    );
    assert!(
        same == union,
        "removed sets differ: only in grist {:?}, only in datatrove {:?}",
        ours.difference(&theirs).collect::<Vec<_>>(),
        theirs.difference(&ours).collect::<Vec<_>>()
    );
    // The candidate pairs of every band: the same (document, document) pairs as datatrove's
    // buckets step (one input shard, so a document's index is its row).
    let bands = header["dups"].as_array().unwrap();
    assert_eq!(bands.len(), 14);
    for (band, theirs) in bands.iter().enumerate() {
        let theirs: HashSet<(u64, u64)> = theirs
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap(), p[1].as_u64().unwrap()))
            .collect();
        let bytes =
            std::fs::read(s.path(&format!("work/barriers/dedup/pairs/{band:04}.bin"))).unwrap();
        let word = |c: &[u8], i: usize| u32::from_le_bytes(c[4 * i..4 * i + 4].try_into().unwrap());
        let ours: HashSet<(u64, u64)> = bytes
            .chunks(16)
            .map(|c| (word(c, 1) as u64, word(c, 3) as u64))
            .collect();
        assert_eq!(bytes.len() / 16, ours.len(), "band {band}: no pair twice");
        assert_eq!(ours, theirs, "band {band}");
    }
    let st = stats(&s.path("work"));
    assert_eq!(st["dedup"]["rows_in"], corpus.len() as u64);
    assert_eq!(
        st["dedup"]["rejected"]["near_duplicate"].as_u64().unwrap() as usize,
        ours.len()
    );
    let metric = |name: &str| st["dedup"]["metrics"][name].as_f64().unwrap();
    assert_eq!(
        metric("clusters"),
        header["summary"]["clusters"].as_f64().unwrap()
    );
    // Our bins group cluster sizes (3-4, 5-8, ...): datatrove's sizes summed per bin are ours.
    let mut theirs_binned: std::collections::BTreeMap<String, f64> = Default::default();
    for (size, n) in header["summary"]["cluster_size_hist"].as_object().unwrap() {
        *theirs_binned
            .entry(grist::dedup::size_bin(size.parse().unwrap()))
            .or_default() += n.as_f64().unwrap();
    }
    for (bin, n) in &theirs_binned {
        assert_eq!(metric(bin), *n, "{bin}");
    }

    // Under a memory budget of 64 KiB, the shard is hashed in chunks of 1,024 signatures (the
    // least) written as sorted runs and merged: the same band files, pairs and removals, byte
    // for byte; the clusters phase holds only the documents in pairs (12 bytes each).
    s.write(
        "small.yaml",
        "name: mh\nworkdir: small\nstages:\n  \
         - {id: docs, type: read_jsonl, path: in}\n  \
         - {id: dedup, type: minhash_dedup, memory_budget: 64KiB}\n  \
         - {id: out, type: write_parquet, path: out-small, rejects: rejects-small}\n",
    );
    assert_ok(&s.grist(&["run", "small.yaml"]));
    let small = stats(&s.path("small"));
    assert_eq!(small["dedup"]["metrics"]["signature_runs_spilled"], 4.0);
    for band in 0..14 {
        for file in [
            format!("signatures/{band:04}/000000.bin"),
            format!("pairs/{band:04}.bin"),
        ] {
            let a = std::fs::read(s.path(&format!("work/barriers/dedup/{file}"))).unwrap();
            let b = std::fs::read(s.path(&format!("small/barriers/dedup/{file}"))).unwrap();
            assert!(a == b, "{file} differs under a memory budget");
        }
    }
    assert_eq!(
        read_rows(&s.path("rejects-small/dedup")),
        read_rows(&s.path("rejects/dedup"))
    );
    assert_eq!(read_rows(&s.path("out-small")), read_rows(&s.path("out")));
    let leftovers: Vec<_> = std::fs::read_dir(s.path("small/barriers/dedup/signatures/0000"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".part"))
        .collect();
    assert!(leftovers.is_empty(), "runs left behind: {leftovers:?}");
    // A budget too small for the documents in pairs stops the clusters phase with a sentence.
    let tiny = std::fs::read_to_string(s.path("small.yaml"))
        .unwrap()
        .replace("64KiB", "1KiB")
        .replace("workdir: small", "workdir: tiny")
        .replace("-small", "-tiny");
    s.write("tiny.yaml", tiny);
    let out = s.grist(&["run", "tiny.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("documents in candidate pairs")
            && text(&out).contains("raise memory_budget"),
        "{}",
        text(&out)
    );
}

/// Correctness of the LSH itself: over every pair of parity-corpus documents that share a
/// shingle, the share of pairs that are candidates (an equal band), binned by their exact Jaccard
/// similarity, follows `1 − (1 − s^8)^14` within sampling error.
#[test]
fn candidate_rate_follows_the_lsh_curve() {
    let corpus = parity_corpus();
    let hasher = MinHasher::new(5, 112, 1, ShingleHash::Xxhash);
    let sets: Vec<HashSet<u64>> = corpus
        .iter()
        .map(|(_, t)| hasher.shingles(t).into_iter().collect())
        .collect();
    let sigs: Vec<Option<Vec<u64>>> = corpus.iter().map(|(_, t)| hasher.signature(t)).collect();
    let mut index: HashMap<u64, Vec<u32>> = HashMap::new();
    for (d, set) in sets.iter().enumerate() {
        for &h in set {
            index.entry(h).or_default().push(d as u32);
        }
    }
    let mut shared: HashMap<(u32, u32), u32> = HashMap::new();
    for docs in index.values() {
        for (i, &x) in docs.iter().enumerate() {
            for &y in &docs[i + 1..] {
                *shared.entry((x, y)).or_default() += 1;
            }
        }
    }
    let curve = |s: f64| 1.0 - (1.0 - s.powi(8)).powi(14);
    // Per bin of similarity: pairs, candidates, expected candidates, variance.
    let mut bins = [(0u64, 0u64, 0f64, 0f64); 10];
    let (mut high, mut high_found, mut candidates, mut candidates_high) = (0, 0, 0, 0);
    for (&(x, y), &inter) in &shared {
        let (a, b) = (&sets[x as usize], &sets[y as usize]);
        let s = f64::from(inter) / (a.len() + b.len() - inter as usize) as f64;
        let (sx, sy) = (
            sigs[x as usize].as_ref().unwrap(),
            sigs[y as usize].as_ref().unwrap(),
        );
        let candidate = sx.chunks(8).zip(sy.chunks(8)).any(|(p, q)| p == q);
        let bin = &mut bins[((s * 10.0) as usize).min(9)];
        let p = curve(s);
        bin.0 += 1;
        bin.1 += u64::from(candidate);
        bin.2 += p;
        bin.3 += p * (1.0 - p);
        candidates += u64::from(candidate);
        if s >= 0.8 {
            high += 1;
            high_found += u64::from(candidate);
            candidates_high += u64::from(candidate);
        }
    }
    eprintln!("similarity  pairs  candidate rate  expected");
    for (i, &(n, found, expected, variance)) in bins.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let (rate, want) = (found as f64 / n as f64, expected / n as f64);
        eprintln!(
            "[{:.1}, {:.1})  {n:>7}  {rate:>14.4}  {want:.4}",
            i as f64 / 10.0,
            (i + 1) as f64 / 10.0
        );
        // Four standard deviations of the binomial count, plus a little for the permutations
        // not being exactly independent.
        let tolerance = 4.0 * variance.sqrt() + 0.01 * n as f64 + 1.0;
        assert!(
            (found as f64 - expected).abs() <= tolerance,
            "similarity bin {i}: {found} candidates of {n}, expected {expected:.1} ± {tolerance:.1}"
        );
    }
    let recall = high_found as f64 / high as f64;
    let precision = candidates_high as f64 / candidates as f64;
    eprintln!(
        "at s ≥ 0.8: recall {recall:.4} ({high_found} of {high} pairs), precision {precision:.4} ({candidates_high} of {candidates} candidates)"
    );
    assert!(
        high > 100,
        "the corpus has too few near-duplicate pairs to test"
    );
    assert!(recall > 0.97);
}

/// Runs `stage` (a dedup stage's YAML mapping) over `docs` split into `shards` JSON Lines files;
/// returns the ids kept, in output order, and the rows with their cluster columns when marking.
fn run_dedup(
    s: &Scratch,
    dir: &str,
    docs: &[(String, String)],
    shards: usize,
    stage: &str,
) -> Vec<serde_json::Value> {
    let per = docs.len().div_ceil(shards).max(1);
    for (k, chunk) in docs.chunks(per).enumerate() {
        write_corpus(s, &format!("{dir}/in/part-{k}.jsonl"), chunk);
    }
    s.write(
        &format!("{dir}/p.yaml"),
        format!(
            "name: d\nworkdir: {dir}/work\nstages:\n  \
             - {{id: docs, type: read_jsonl, path: {dir}/in}}\n  \
             - {{id: dedup, {stage}}}\n  \
             - {{id: out, type: write_parquet, path: {dir}/out}}\n"
        ),
    );
    assert_ok(&s.grist(&["run", &format!("{dir}/p.yaml")]));
    let st = stats(&s.path(&format!("{dir}/work")));
    assert_eq!(st["dedup"]["rows_in"], docs.len() as u64);
    read_rows(&s.path(&format!("{dir}/out")))
}

fn ids(rows: &[serde_json::Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// A corpus with planted copies: `bases` documents from a small vocabulary, each copied up to
/// three times with a share of its words replaced, in a shuffled order.
fn planted_corpus(seed: u64, bases: usize) -> Vec<(String, String)> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n.max(1)
    };
    let words: Vec<String> = (0..300).map(|i| format!("w{i}")).collect();
    let mut docs = Vec::new();
    for b in 0..bases {
        let len = 8 + next(60) as usize;
        let base: Vec<&str> = (0..len)
            .map(|_| words[next(300) as usize].as_str())
            .collect();
        docs.push(base.join(" "));
        for _ in 0..next(4) {
            let rate = [0.0, 0.02, 0.1, 0.3][next(4) as usize];
            let copy: Vec<&str> = base
                .iter()
                .map(|w| match (next(1000) as f64) < rate * 1000.0 {
                    true => words[next(300) as usize].as_str(),
                    false => w,
                })
                .collect();
            docs.push(copy.join(" "));
        }
        let _ = b;
    }
    for i in (1..docs.len()).rev() {
        docs.swap(i, next(i as u64 + 1) as usize);
    }
    docs.into_iter()
        .enumerate()
        .map(|(i, t)| (format!("doc-{i:04}"), t))
        .collect()
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

        /// A second pass removes nothing, and every cluster keeps exactly one document.
        #[test]
        fn dedup_is_idempotent_and_keeps_one_per_cluster(seed in any::<u64>(), bases in 3usize..25, shards in 1usize..4) {
            let docs = planted_corpus(seed, bases);
            for stage in ["type: minhash_dedup", "type: exact_dedup, normalize: true"] {
                let s = Scratch::new();
                let marked = run_dedup(&s, "m", &docs, shards, &format!("{stage}, mark_only: true"));
                let kept = run_dedup(&s, "a", &docs, shards, stage);
                let kept_ids: HashSet<String> = ids(&kept).into_iter().collect();
                let mut clusters: HashMap<i64, (u64, usize)> = HashMap::new();
                for r in &marked {
                    if let Some(c) = r["dedup_cluster"].as_i64() {
                        let e = clusters.entry(c).or_insert((r["dedup_cluster_size"].as_u64().unwrap(), 0));
                        e.1 += usize::from(kept_ids.contains(r["id"].as_str().unwrap()));
                    }
                }
                for (c, (size, survivors)) in &clusters {
                    prop_assert!(*size >= 2);
                    prop_assert_eq!(*survivors, 1, "cluster {} ({}) keeps {} documents", c, stage, survivors);
                }
                let distinct: HashSet<&String> = docs.iter().map(|(_, t)| t).collect();
                if distinct.len() < docs.len() {
                    prop_assert!(!clusters.is_empty(), "exact copies were not clustered ({})", stage);
                }
                let removed = docs.len() - kept.len();
                prop_assert_eq!(removed as u64, clusters.values().map(|(n, _)| n - 1).sum::<u64>());
                let again_docs: Vec<(String, String)> = kept
                    .iter()
                    .map(|r| (r["id"].as_str().unwrap().to_string(), r["text"].as_str().unwrap().to_string()))
                    .collect();
                let again = run_dedup(&s, "b", &again_docs, shards, stage);
                prop_assert_eq!(ids(&again), ids(&kept));
            }
        }
    }
}

/// Under a memory budget that holds 1,024 hash records, a shard's hashes are written in sorted
/// runs and merged: the same hash files, members and output as without a budget.
#[test]
fn exact_dedup_under_a_memory_budget_gives_the_same_result() {
    let mut docs = parity_corpus();
    let copies: Vec<(String, String)> = docs
        .iter()
        .step_by(5)
        .map(|(id, t)| (format!("{id}-copy"), t.clone()))
        .collect();
    docs.extend(copies);
    let s = Scratch::new();
    let free = run_dedup(&s, "free", &docs, 2, "type: exact_dedup, mark_only: true");
    let small = run_dedup(
        &s,
        "small",
        &docs,
        2,
        "type: exact_dedup, mark_only: true, memory_budget: 1KiB",
    );
    assert_eq!(free, small);
    assert!(free.iter().any(|r| r["dedup_cluster"].is_i64()));
    let st = stats(&s.path("small/work"));
    assert!(
        st["dedup"]["metrics"]["hash_runs_spilled"]
            .as_f64()
            .unwrap()
            >= 1.0
    );
    for p in 0..16 {
        for k in 0..2 {
            let file = format!("barriers/dedup/hashes/{p:04}/{k:06}.bin");
            let a = std::fs::read(s.path(&format!("free/work/{file}"))).unwrap();
            let b = std::fs::read(s.path(&format!("small/work/{file}"))).unwrap();
            assert!(a == b, "{file} differs under a memory budget");
        }
        let runs: Vec<_> =
            std::fs::read_dir(s.path(&format!("small/work/barriers/dedup/hashes/{p:04}")))
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().contains(".run"))
                .collect();
        assert!(runs.is_empty(), "runs left behind in partition {p}");
    }
}

#[test]
fn exact_dedup_keeps_the_first_copy_in_input_order() {
    let docs: Vec<(String, String)> = [
        ("a", "The same text."),
        ("b", "Other text"),
        ("c", "The same text."),
        ("d", "the SAME text"),
        ("e", "Other text"),
        ("f", ""),
        ("g", ""),
    ]
    .iter()
    .map(|(i, t)| (i.to_string(), t.to_string()))
    .collect();
    let s = Scratch::new();
    let kept = run_dedup(&s, "x", &docs, 3, "type: exact_dedup");
    assert_eq!(ids(&kept), ["a", "b", "d", "f"]);
    let kept = run_dedup(
        &s,
        "y",
        &docs,
        2,
        "type: exact_dedup, normalize: true, partitions: 3",
    );
    assert_eq!(ids(&kept), ["a", "b", "f"]);
    let st = stats(&s.path("y/work"));
    assert_eq!(st["dedup"]["rejected"]["exact_duplicate"], 4);
    assert_eq!(st["dedup"]["metrics"]["clusters_of_3-4"], 1.0);
}

/// A four-shard MinHash pipeline over real documents with planted copies.
fn sharded_pipeline(s: &Scratch) {
    let mut docs: Vec<(String, String)> = c4_docs()
        .into_iter()
        .take(120)
        .enumerate()
        .map(|(i, (text, _, _))| (format!("c4/{i}"), text))
        .collect();
    for i in (0..120).step_by(7) {
        let copy = docs[i].1.replacen(". ", ", ", 1);
        docs.push((format!("copy/{i}"), copy));
    }
    for k in 0..4 {
        let chunk: Vec<_> = docs.iter().skip(k).step_by(4).cloned().collect();
        write_corpus(s, &format!("in/part-{k}.jsonl"), &chunk);
    }
    s.write(
        "p.yaml",
        "name: sh\nworkdir: work\nstages:\n  \
         - {id: docs, type: read_jsonl, path: in}\n  \
         - {id: dedup, type: minhash_dedup, num_buckets: 4}\n  \
         - {id: out, type: write_parquet, path: out, rejects: rejects}\n",
    );
}

#[test]
fn phases_run_as_scheduler_array_tasks_or_after_a_kill_give_the_same_output() {
    let reference = Scratch::new();
    sharded_pipeline(&reference);
    assert_ok(&reference.grist(&["run", "p.yaml"]));
    let expected = read_rows(&reference.path("out"));
    let removed = read_rows(&reference.path("rejects/dedup"));
    assert_eq!(expected.len() + removed.len(), 120 + 18);
    assert!(removed.len() >= 15, "{} removed", removed.len());

    // Each phase as a two-process array job, in plan order.
    let s = Scratch::new();
    sharded_pipeline(&s);
    let phases = [
        "stream",
        "dedup.signatures",
        "dedup.buckets",
        "dedup.clusters",
        "dedup.filter",
    ];
    for phase in phases {
        for task in ["0", "1"] {
            let out = s.grist(&[
                "run", "p.yaml", "--phase", phase, "--task", task, "--tasks", "2",
            ]);
            assert_ok(&out);
        }
    }
    assert!(
        read_rows(&s.path("out")) == expected,
        "array-job output differs"
    );
    let st = stats(&s.path("work"));
    assert_eq!(st["dedup"]["tasks_done"], st["dedup"]["tasks_total"]);

    // Killed inside each phase (the n-th task marker: 4 stream, 4 signatures, 4 buckets, 1
    // clusters), then run again.
    for point in ["marker:2", "marker:6", "commit:10", "marker:13", "batch:3"] {
        let s = Scratch::new();
        sharded_pipeline(&s);
        kill_at(&s, &["run", "p.yaml", "--workers", "1"], point);
        assert_ok(&s.grist(&["run", "p.yaml"]));
        assert!(
            read_rows(&s.path("out")) == expected,
            "output differs after a kill at {point}"
        );
        assert!(
            read_rows(&s.path("rejects/dedup")) == removed,
            "rejects differ at {point}"
        );
    }
}
