//! The Self-Instruct pool check (ROUGE-L of a candidate against every pool instruction, with the
//! max, mean and 10 most similar) at growing pool sizes. Run by `tests/bench/rouge_pool.py`,
//! which times `rouge_score` on the same pool and candidates:
//! `cargo bench --bench rouge_pool -- POOL.jsonl CANDIDATES.jsonl` prints one JSON line per pool
//! size given in the candidates file.

use std::time::Instant;

use grist::synth::rouge::Pool;

fn lines(path: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .map(|l| serde_json::from_str::<String>(l).expect("a JSON string per line"))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    if args.len() < 4 {
        eprintln!("usage: rouge_pool POOL.jsonl CANDIDATES.jsonl SIZE...");
        return;
    }
    let pool_texts = lines(&args[1]);
    let candidates = lines(&args[2]);
    for size in args[3..]
        .iter()
        .map(|s| s.parse::<usize>().expect("a pool size"))
    {
        let mut pool = Pool::new();
        let started = Instant::now();
        for t in &pool_texts[..size.min(pool_texts.len())] {
            let ids = pool.tokens(t);
            pool.push(ids);
        }
        let build = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let mut checksum = 0.0;
        for c in &candidates {
            let ids = pool.tokens(c);
            let s = pool.compare(&ids, 10);
            checksum += s.max + s.mean;
        }
        let per = started.elapsed().as_secs_f64() / candidates.len() as f64;
        println!(
            "{}",
            serde_json::json!({"pool": pool.len(), "candidates": candidates.len(),
                               "seconds_per_check": per, "build_seconds": build,
                               "threads": rayon::current_num_threads(), "checksum": checksum})
        );
    }
}
