#!/usr/bin/env python3
"""ROUGE-L goldens for grist's Self-Instruct near-duplicate filter (src/synth/).

Self-Instruct (bootstrap_instructions.py) drops a generated instruction when its ROUGE-L F1 against
any instruction already in the pool is >= 0.7, scored exactly like this:

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    scorer.score(new_instruction, pool_instruction)["rougeL"].fmeasure     # (target, prediction)

This script records that score for >= 1200 instruction pairs, so Rust tests can check grist's
tokenizer and LCS bit for bit, offline.

Writes --out (default tests/fixtures/synth/rouge_pairs.jsonl), one JSON object per line:

    {"kind": "random|nearest|near07|boundary|mutated|edge", "a": <target>, "b": <prediction>,
     "f": "<repr(float(fmeasure))>", "tokens_a": [...], "tokens_b": [...]}

- `f` is a string, Python's repr of the f64, so it parses back exactly (e.g. "0.5333333333333333").
  rouge-score returns the int 0 when either side has no tokens; it is written as "0.0".
- tokens_* are `rouge_score.tokenize.tokenize(text, None)`: the scorer's own tokenization.
- kinds:
    random   pairs of instructions drawn at random (mostly low scores);
    nearest  for 300 instructions, the other instruction with the highest rougeL (ties: the first
             in pool order), so that scores near and above 0.7 appear;
    near07   an instruction against its tokens (joined by spaces) with d in 0..3 tokens deleted and
             then as many tokens replaced by "xyzzy" as brings f closest to 0.7;
    boundary synthetic token lists with (lcs, len_a, len_b) chosen so that 2*lcs/(len_a+len_b) is
             (mostly) exactly 0.7 in rationals (f is then 0.7, 0.7000000000000001, 0.6999999999999998 or
             0.7000000000000002: compute 2*p*r/(p+r) with p = lcs/len_b, r = lcs/len_a exactly so);
    mutated  an instruction against a copy with a few words dropped / swapped / inserted / changed
             in case or punctuation (high scores, some exactly around 0.7);
    edge     hand-made: empty, punctuation only, non-ASCII (the only two non-ASCII characters whose
             str.lower() contains [a-z0-9] are U+0130 'İ' -> "i̇" and U+212A KELVIN SIGN -> "k"),
             digits, a 20x repeated instruction, identical strings, "C++ / C#", ...

Input: ../shared/data/self_instruct_seed/{seed_tasks,user_oriented_instructions}.jsonl, field
`instruction` (the 175 seed tasks and 252 user-oriented instructions of Self-Instruct). Everything
is drawn with random.Random(0), so the output is deterministic.

Run in the synth venv (tests/parity/synth_venv.sh):

    ~/.cache/grist/synth-venv/bin/python tests/parity/rouge_goldens.py [--out PATH] [--data DIR]
"""

import argparse
import collections
import importlib.metadata
import json
import random
import sys
from pathlib import Path

from rouge_score import rouge_scorer
from rouge_score import tokenize as rouge_tokenize

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DATA = REPO.parent / "shared/data/self_instruct_seed"

N_RANDOM = 800
N_NEAREST = 300
N_MUTATED = 120
N_NEAR07 = 150
# (lcs, len(a), len(b)) with 2 * lcs / (len_a + len_b) == 0.7 exactly in rationals; rouge-score's
# 2*p*r/(p+r) gives 0.7000000000000001, 0.7, 0.6999999999999998 and 0.7000000000000002 for them.
# Plus a few just off 0.7.
BOUNDARY = [(7, 10, 10), (7, 9, 11), (7, 13, 7), (14, 17, 23), (21, 23, 37), (21, 37, 23), (28, 29, 51),
            (35, 41, 59), (42, 46, 74), (14, 20, 20), (7, 10, 11), (7, 11, 10), (7, 10, 9), (69, 99, 99),
            (70, 100, 100), (71, 101, 101), (1, 1, 2), (2, 3, 3)]


def load(data: Path) -> list[str]:
    out = []
    for name in ("seed_tasks.jsonl", "user_oriented_instructions.jsonl"):
        with open(data / name, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    out.append(json.loads(line)["instruction"])
    return out


def toks(text: str) -> list[str]:
    return rouge_tokenize.tokenize(text, None)


def lcs_f(ta: list[str], tb: list[str]) -> float:
    """Only for the nearest-neighbour search (fast path); the recorded scores come from scorer.score."""
    return rouge_scorer._score_lcs(ta, tb).fmeasure


def mutate(rng: random.Random, text: str) -> str:
    words = text.split()
    if len(words) < 4:
        return text + " again"
    op = rng.choice(["drop", "drop2", "swap", "insert", "case", "punct", "replace3", "prefix"])
    w = list(words)
    if op == "drop":
        del w[rng.randrange(len(w))]
    elif op == "drop2":
        i = rng.randrange(len(w) - 1)
        del w[i:i + 2]
    elif op == "swap":
        i = rng.randrange(len(w) - 1)
        w[i], w[i + 1] = w[i + 1], w[i]
    elif op == "insert":
        w.insert(rng.randrange(len(w) + 1), rng.choice(["please", "the", "carefully", "new", "2"]))
    elif op == "case":
        return text.upper() if rng.random() < 0.5 else text.lower()
    elif op == "punct":
        return text.replace(" ", ", ", 2).rstrip(".") + "!!"
    elif op == "replace3":
        for i in rng.sample(range(len(w)), min(3, len(w))):
            w[i] = "xyzzy"
    elif op == "prefix":
        return "Now, " + text
    return " ".join(w)


def near07(rng: random.Random, tokens: list[str]) -> str:
    t = list(tokens)
    for _ in range(rng.randrange(4)):
        if len(t) > 6:
            del t[rng.randrange(len(t))]
    n, nb = len(tokens), len(t)
    # replacing k of the remaining tokens leaves lcs = nb - k: f = 2 (nb - k) / (n + nb)
    k = min(range(nb + 1), key=lambda k: (abs(2 * (nb - k) / (n + nb) - 0.7), k))
    for i in rng.sample(range(nb), k):
        t[i] = "xyzzy"
    return " ".join(t)


def boundary(rng: random.Random, vocab: list[str], lcs: int, na: int, nb: int) -> tuple[str, str]:
    words = rng.sample(vocab, na + nb - lcs)
    a = words[:na]
    common = sorted(rng.sample(range(na), lcs))
    # b: the common words in a's order, b's own words inserted at random places; lcs is exact
    b = [a[i] for i in common]
    for w in words[na:]:
        b.insert(rng.randrange(len(b) + 1), w)
    return " ".join(a), " ".join(b)


def edge_cases(pool: list[str]) -> list[tuple[str, str]]:
    ten = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    seven_of_ten = "alpha beta gamma delta epsilon zeta eta one two three"  # lcs 7, 10 vs 10: p = r = 0.7
    long_a = " ".join([pool[0]] * 20)
    long_b = " ".join([pool[1]] * 20)
    return [
        ("", ""),
        ("", pool[0]),
        (pool[0], ""),
        ("!!! ... ???", "--- ,,, ;;;"),
        ("!!! ... ???", pool[2]),
        ("   \t\n  ", "\n"),
        ("Übersetze: café naïve İstanbul", "Translate: cafe naive Istanbul"),
        ("Übersetze: café naïve İstanbul", "Übersetze: café naïve İstanbul"),
        ("İ", "i"),
        ("İSTANBUL", "istanbul"),
        ("\u212a", "k"),
        ("Temperature in \u212aelvin: 300\u212a", "temperature in kelvin 300k"),
        ("STRASSE straße ẞ", "strasse"),
        ("ΣΊΣΥΦΟΣ Σίσυφος", "sisyphus"),
        ("Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３", "fullwidth abc 123"),
        ("٣ ٤ ٥ Arabic-Indic digits ³ ½ Ⅻ", "arabic indic digits 3"),
        ("emoji 😀 between👍words", "emoji between words"),
        ("Compute 3.14 * 2 = 6.28, then 1,000,000 / 10", "compute 3 14 2 6 28 then 1 000 000 10"),
        ("2024 2025 2026", "2026 2025 2024"),
        ("C++ / C#", "C C"),
        ("C++ / C#", "c++ and c# and f#"),
        ("don't won't e-mail snake_case CamelCase", "don t won t e mail snake case camelcase"),
        ("tab\tseparated\nnew\r\nlines\u00a0nbsp\u2003emspace", "tab separated new lines nbsp emspace"),
        ("zero\u200bwidth\u00adsoft-hyphen", "zero width soft hyphen"),
        (long_a, long_b),
        (long_a, pool[0]),
        (pool[3], pool[3]),
        (pool[4].upper(), pool[4].lower()),
        (ten, seven_of_ten),
        (ten, "alpha beta gamma delta epsilon zeta eta"),
        ("a a a a b", "a b b b b"),
        ("the the the", "the"),
        ("x", "x"),
        ("x", "y"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=REPO / "tests/fixtures/synth/rouge_pairs.jsonl")
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()

    pool = load(args.data)
    rng = random.Random(0)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pool_toks = [toks(t) for t in pool]
    print(f"pool: {len(pool)} instructions from {args.data}", file=sys.stderr)

    pairs: list[tuple[str, str, str]] = []
    # (a) random pairs (i != j)
    for _ in range(N_RANDOM):
        i, j = rng.sample(range(len(pool)), 2)
        pairs.append(("random", pool[i], pool[j]))
    # (b) nearest other instruction
    for i in sorted(rng.sample(range(len(pool)), N_NEAREST)):
        best_j, best = -1, -1.0
        for j in range(len(pool)):
            if j != i:
                s = lcs_f(pool_toks[i], pool_toks[j])
                if s > best:
                    best_j, best = j, s
        pairs.append(("nearest", pool[i], pool[best_j]))
    # (c) mutated copies
    for i in rng.sample(range(len(pool)), N_MUTATED):
        m = mutate(rng, pool[i])
        pairs.append(("mutated", pool[i], m) if rng.random() < 0.5 else ("mutated", m, pool[i]))
    # (d) near 0.7 by construction
    for i in rng.sample([i for i, t in enumerate(pool_toks) if len(t) >= 8], N_NEAR07):
        pairs.append(("near07", pool[i], near07(rng, pool_toks[i])))
    # (e) exact-0.7 boundaries on synthetic token lists (distinct words from the pool's vocabulary)
    vocab = sorted({t for ts in pool_toks for t in ts if t != "xyzzy"})
    for lcs, na, nb in BOUNDARY:
        a, b = boundary(rng, vocab, lcs, na, nb)
        assert rouge_scorer._score_lcs(toks(a), toks(b)).fmeasure == \
            rouge_scorer.scoring.fmeasure(lcs / nb, lcs / na), (lcs, na, nb)
        pairs.append(("boundary", a, b))
    # (f) edge cases
    pairs += [("edge", a, b) for a, b in edge_cases(pool)]

    args.out.parent.mkdir(parents=True, exist_ok=True)
    hist = collections.Counter()
    by_kind = collections.defaultdict(list)
    n_exact_07 = 0
    n_not_simple = 0  # pairs where 2*lcs/(na+nb) != rouge-score's 2*p*r/(p+r)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        for kind, a, b in pairs:
            fm = float(scorer.score(a, b)["rougeL"].fmeasure)
            ta, tb = toks(a), toks(b)
            # the scorer tokenizes with the same function (DefaultTokenizer without stemmer)
            assert ta == scorer._tokenizer.tokenize(a) and tb == scorer._tokenizer.tokenize(b)
            assert fm == lcs_f(ta, tb)
            rec = {"kind": kind, "a": a, "b": b, "f": repr(fm), "tokens_a": ta, "tokens_b": tb}
            f.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
            hist[min(int(fm * 10), 9) if fm < 1.0 else 10] += 1
            by_kind[kind].append(fm)
            n_exact_07 += abs(fm - 0.7) < 1e-9
            if ta and tb:
                lcs = round(fm * (len(ta) + len(tb)) / 2)
                n_not_simple += fm != 2 * lcs / (len(ta) + len(tb))

    n = len(pairs)
    print(f"wrote {n} pairs to {args.out} ({args.out.stat().st_size} bytes)", file=sys.stderr)
    for k, v in by_kind.items():
        print(f"  {k:8} {len(v):5}  mean {sum(v) / len(v):.3f}  >=0.7: {sum(x >= 0.7 for x in v)}", file=sys.stderr)
    print("histogram of f:", file=sys.stderr)
    for b in range(11):
        label = "   1.0    " if b == 10 else f"[{b / 10:.1f},{(b + 1) / 10:.1f})"
        print(f"  {label} {hist[b]:5} {'#' * (hist[b] * 60 // max(hist.values()))}", file=sys.stderr)
    allf = [x for v in by_kind.values() for x in v]
    print(f"  == 0: {sum(x == 0 for x in allf)}   > 0.7: {sum(x > 0.7 for x in allf)}   >= 0.7: "
          f"{sum(x >= 0.7 for x in allf)}   within 1e-9 of 0.7: {n_exact_07}   == 1: {sum(x == 1 for x in allf)}",
          file=sys.stderr)
    print(f"  pairs where 2*lcs/(len_a+len_b) differs from rouge-score's 2*p*r/(p+r) in the last bits: "
          f"{n_not_simple}", file=sys.stderr)
    print("versions:", " ".join(f"{d}=={importlib.metadata.version(d)}" for d in ("rouge-score", "nltk", "six")),
          "python", sys.version.split()[0], file=sys.stderr)


if __name__ == "__main__":
    main()
