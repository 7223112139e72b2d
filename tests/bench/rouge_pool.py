#!/usr/bin/env python3
"""The Self-Instruct pool check at 1 k, 10 k and 50 k instructions: grist's `synth::rouge::Pool`
against `rouge_score` (what bootstrap_instructions.py runs: `scorer.score(candidate, x)` for every
pool instruction x, then max, mean and the 10 most similar), on the same pool and candidates.

The pool is made from the shared seed and user-oriented instructions by word-level mutation (drop,
swap, insert a word from another instruction), deterministic (seed 0), so sizes up to 50 k exist.

    ~/.cache/grist/synth-venv/bin/python tests/bench/rouge_pool.py [--candidates 20] [--threads 2]

rouge_score runs in one process (upstream uses Pool(4); on this 2-core machine that is at most
2x), grist on --threads threads (RAYON_NUM_THREADS). Prints a markdown table.
"""
import argparse, json, os, random, subprocess, sys, time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "self_instruct_seed"


def base_instructions():
    out = []
    for name in ("seed_tasks.jsonl", "user_oriented_instructions.jsonl"):
        for line in open(DATA / name):
            out.append(json.loads(line)["instruction"])
    return out


def make_pool(n, rng):
    base = base_instructions()
    words = [w for b in base for w in b.split()]
    pool = list(base)
    while len(pool) < n:
        ws = rng.choice(base).split()
        for _ in range(rng.randint(1, 6)):
            op = rng.random()
            i = rng.randrange(len(ws)) if ws else 0
            if op < 0.3 and len(ws) > 3:
                del ws[i]
            elif op < 0.6 and len(ws) > 1:
                j = rng.randrange(len(ws))
                ws[i], ws[j] = ws[j], ws[i]
            else:
                ws.insert(i, rng.choice(words))
        pool.append(" ".join(ws))
    return pool[:n]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--python-max", type=int, default=50000, help="largest pool rouge_score is timed on")
    args = ap.parse_args()
    from rouge_score import rouge_scorer
    import numpy as np

    rng = random.Random(0)
    pool = make_pool(max(args.sizes), rng)
    cands = make_pool(len(pool) + args.candidates, random.Random(1))[-args.candidates:]
    work = REPO / "tests" / "bench" / "work" / "rouge_pool"
    work.mkdir(parents=True, exist_ok=True)
    (work / "pool.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pool))
    (work / "candidates.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cands))

    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    cmd = ["cargo", "bench", "--quiet", "--bench", "rouge_pool", "--",
           str(work / "pool.jsonl"), str(work / "candidates.jsonl")] + [str(s) for s in args.sizes]
    out = subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, text=True).stdout
    grist = {r["pool"]: r for r in map(json.loads, out.split("\n")[:-1] if out.endswith("\n") else out.split("\n"))}

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rows = []
    for size in args.sizes:
        g = grist[size]["seconds_per_check"]
        py = None
        if size <= args.python_max:
            n = max(1, min(args.candidates, 5 if size >= 10000 else args.candidates))
            t = time.perf_counter()
            for c in cands[:n]:
                scores = [scorer.score(c, p)["rougeL"].fmeasure for p in pool[:size]]
                _ = (max(scores), float(np.mean(scores)), np.argsort(scores)[-10:][::-1])
            py = (time.perf_counter() - t) / n
        rows.append((size, g, py))
    print(f"| pool | grist ({args.threads} threads) ms/check | rouge_score (1 process) ms/check | ratio |")
    print("|---|---|---|---|")
    for size, g, py in rows:
        ratio = f"{py / g:.0f}x" if py else "-"
        pys = f"{py * 1e3:.1f}" if py else "-"
        print(f"| {size:,} | {g * 1e3:.2f} | {pys} | {ratio} |")


if __name__ == "__main__":
    sys.exit(main())
