#!/usr/bin/env python3
"""Golden tokenizations from spaCy's blank English tokenizer + sentencizer, as datatrove 0.10.1
uses them, for grist's port in src/text/spacy_en.rs.

Writes two gzipped JSON Lines files:
- spacy_en_web.jsonl.gz: for each document of ../shared/data/web_en (same documents as
  datatrove_filters.jsonl.gz), the token count, the sha256 of all token texts (whitespace tokens
  included) joined by U+0000, and the sentence count of the whole text;
- spacy_en_tricky.jsonl.gz: seeded strings built to hit every rule (special cases in context,
  affixes, units, URLs, emoticons, hyphens, odd whitespace), each with its full token list and
  sentence count.

Run through make_goldens.sh (it sets up the venv), or directly:
    ~/.cache/grist/parity-venv/bin/python tests/parity/spacy_goldens.py --out-dir tests/fixtures/parity
"""

import argparse
import gzip
import hashlib
import json
import os
import random

import spacy

from datatrove_goldens import iter_documents  # same documents, order and data dir (GRIST_PARITY_DATA)


def tokenize(nlp, text):
    nlp.max_length = len(text) + 10
    doc = nlp(text)
    return [t.text for t in doc], max(1, len(list(doc.sents)))


def tricky_strings(nlp, seed=20261122):
    rng = random.Random(seed)
    specials = sorted(nlp.tokenizer.rules)
    d = nlp.Defaults
    affix_chars = sorted(
        {re_lit for re_lit in (e.replace("\\", "") for e in d.prefixes + d.suffixes + d.infixes) if len(re_lit) <= 3}
    )
    words = ["word", "Word", "WORD", "don't", "it's", "U.S", "e.g", "I", "a", "x", "km", "10", "3.5", "1,000",
             "well-known", "co-op", "A.B.C", "naïve", "Ünïcode", "中文", "ру́сский", "αβγ", "x2", "2x", "°F", "°C",
             "http://a.b/c", "www.example.com", "user@mail.org", "10.0.0.1", "192.168.1.1", "8.8.8.8",
             "example.co.uk:8080/path?q=1#frag", "ftp://x.y", "a.m", "p.m", "Mr", "Dr", "St", "vs", "etc",
             "ain't", "cannot", "gonna", "y'all", "'em", "o'clock", "rock'n'roll", "IS_ALPHA", "$5", "5$",
             "US$10", "20%", "+1", "1+1", "-5", "5-", "a/b", "a:b", "a=b", "a<b", "a>b", "x^2", "3*4", "a,b",
             "a.B", "a..b", "a...b", "a…b", "Hello!", "(test)", "[1]", "{x}", "«q»", "“q”", "‘q’", "#tag",
             "@user", "&amp;", "_x_", "*bold*", "~x~", "...", "..", ".", "…", "……", "!!", "?!", "::", ";;"]
    spaces = [" ", " ", " ", "  ", "\n", "\t", "\u00a0", "\u3000", " \n ", "\r\n", "\x0b", "\x1c", ""]
    out = []
    for s in specials:
        for ctx in ("{}", "({})", "{},", "{}.", "\"{}\"", "x{}", "{}x", "{}-{}", "a {} b", "{}...", "({}):"):
            out.append(ctx.format(s, s))
    for c in affix_chars:
        for w in ("word", "10", "A", "a.b"):
            out.extend([c + w, w + c, w + c + w, c + c + w + c, c + w + c + c])
    for _ in range(6000):
        n = rng.randint(1, 8)
        parts = []
        for _ in range(n):
            r = rng.random()
            if r < 0.35:
                parts.append(rng.choice(words))
            elif r < 0.55:
                parts.append(rng.choice(specials))
            elif r < 0.8:
                parts.append(rng.choice(affix_chars))
            else:
                cp = rng.choice([rng.randint(0x21, 0x7E), rng.randint(0xA0, 0x2FFF), rng.randint(0x3000, 0xD7FF)])
                parts.append(chr(cp))
            parts.append(rng.choice(spaces) if rng.random() < 0.5 else "")
        out.append("".join(parts))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", default="tests/fixtures/parity")
    args = ap.parse_args()
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")

    path = os.path.join(args.out_dir, "spacy_en_web.jsonl.gz")
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        for source, file, record, field, text in iter_documents():
            rec = {"source": source, "file": file, "record": record, "field": field}
            if text:
                tokens, sents = tokenize(nlp, text)
                rec["tokens"] = len(tokens)
                rec["tokens_sha256"] = hashlib.sha256("\0".join(tokens).encode()).hexdigest()
                rec["sentences"] = sents
            f.write((json.dumps(rec, ensure_ascii=False) + "\n").encode())

    path = os.path.join(args.out_dir, "spacy_en_tricky.jsonl.gz")
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        for text in tricky_strings(nlp):
            tokens, sents = tokenize(nlp, text)
            rec = {"text": text, "tokens": tokens, "sentences": sents}
            f.write((json.dumps(rec, ensure_ascii=False) + "\n").encode())


if __name__ == "__main__":
    main()
