#!/usr/bin/env python3
"""Golden outputs of datatrove 0.10.1's `PIIFormatter()` (e-mail and public-IPv4 replacement).

Run through tests/parity/crawl_goldens.sh (it builds the pinned venv). Direct use:

    python tests/parity/pii_goldens.py [--out PATH] [--versions PATH]

Each *task* below is one fresh `PIIFormatter()` (all defaults) fed its documents, in order, through
datatrove's own `BaseFormatter.run()` generator: exactly what one datatrove task (rank) does, since
every rank starts from a fresh copy of the pipeline. The two replacement counters (one for e-mails,
one for IPs) therefore start at 0 at the start of each task and carry across its documents.
Documents whose text is empty or missing are skipped as datatrove's readers skip them (a line with
"skipped" is written, the formatter never sees them, so the counters do not move).

Tasks, in this order (paths relative to $GRIST_PARITY_DATA, default /work/shared/data):
  c4                     web_en/c4_sample/c4_sample_docs000-799.jsonl.gz            field text
  wceb2026_trafilatura   web_en/wceb2026_pages/pages_first800.jsonl.gz               field trafilatura_text
  wceb2026_raw           web_en/wceb2026_pages/pages_first800.jsonl.gz               field raw_text
  dolma_cc_0091          web_en/dolma_fixtures/multiple_files__cc_en_head-0091.jsonl.gz  field text
  dolma_cc_0174          web_en/dolma_fixtures/multiple_files__cc_en_head-0174.jsonl.gz  field text
  dolma_docs             web_en/dolma_fixtures/provided__documents__000.json.gz      field text
  adversarial            generated here (adversarial_texts()), full text stored

Output (gzip, mtime 0, deterministic): tests/fixtures/parity/pii.jsonl.gz. Line 1 is a header
{"_meta": {...}} with the task table and the replay rules. Then one line per record, in order:
  {"task", "i" (0-based record index in the source file / adversarial list),
   "in_sha256", "out_sha256" (of the UTF-8 text), "changed": bool,
   "n_email", "n_ip", "n_ip_kept" (matches of the e-mail regex, of the IP regex on the e-mail-replaced
   text, and IP matches that failed the public-IP validator and were left as they were),
   "text", "out"   (only when changed, and always for the adversarial task)}
  or {"task", "i", "skipped": "empty"|"null"}.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import sys
import traceback
from importlib import metadata as importlib_metadata

DATA = os.environ.get("GRIST_PARITY_DATA", "/work/shared/data")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(REPO, "tests", "fixtures", "parity", "pii.jsonl.gz")
DEFAULT_VERSIONS = os.path.join(REPO, "tests", "fixtures", "parity", "VERSIONS_crawl.txt")

TASKS = [
    ("c4", "web_en/c4_sample/c4_sample_docs000-799.jsonl.gz", "text"),
    ("wceb2026_trafilatura", "web_en/wceb2026_pages/pages_first800.jsonl.gz", "trafilatura_text"),
    ("wceb2026_raw", "web_en/wceb2026_pages/pages_first800.jsonl.gz", "raw_text"),
    ("dolma_cc_0091", "web_en/dolma_fixtures/multiple_files__cc_en_head-0091.jsonl.gz", "text"),
    ("dolma_cc_0174", "web_en/dolma_fixtures/multiple_files__cc_en_head-0174.jsonl.gz", "text"),
    ("dolma_docs", "web_en/dolma_fixtures/provided__documents__000.json.gz", "text"),
]


def sha(s: str) -> str:
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def iter_jsonl_gz(path: str):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        i = 0
        for line in f:
            if line.strip():
                yield i, json.loads(line)
                i += 1


def adversarial_texts() -> list[str]:
    """Hand-made edge cases. Order matters: the replacement counters carry across documents."""
    t: list[str] = []
    # --- nothing to replace
    t += ["", "No PII here at all.", "user@localhost and admin@intranet have no dot in the domain."]
    # --- e-mail: shapes the regex accepts or rejects
    t += [
        "Contact: john.doe@example.com for details.",
        "JOHN.DOE@EXAMPLE.COM",
        "john+tag@gmail.com",
        "first.last+tag+more@sub.mail.example.co.uk",
        "a.b.c@d.e.f.g",
        "x@y.z",
        "odd!#$%&'*+/=?^_`{|}~-chars@example.com",
        ".leadingdot@example.com",
        "trailingdot.@example.com",
        "double..dot@example.com",
        "user@-example.com user@example-.com user@exa_mple.com user@ex--ample.com",
        "user@example.com. Then a sentence.",
        "user@example.c",
        "user@123.123.123.123 (all-digit domain, IPv4-looking)",
        "user@[192.168.0.1] and user@[8.8.8.8] and user@[1.2.3.abc-d:] and user@[IPv6:2001:db8::1]",
        "user@[256.1.1.1]",
        '"quoted local"@example.com and "q"@example.com',
        "üser@example.com user@exämple.com 用户@例子.广告 user@xn--exmple-cua.com",
        "mailto:someone@example.org?subject=hi",
        "http://example.com/user@example.com/path",
        "https://user:pass@example.com/ and ftp://anon:guest@ftp.example.net:21/",
        "http://u:p@8.8.4.4:80/",
        "name@domain.com,other@domain.org;third@domain.net|fourth@domain.io",
        "a" * 300 + "@example.com",
        "user@" + "sub." * 60 + "example.com",
        "123abc@ex.com",
        "email: foo@bar.com.au, foo@bar.com.",
        "foo@bar.com-baz",
        "foo@bar.com@baz.org",
        "foo@@bar.com",
        "@example.com",
        "user@example.com\nuser2@example.com\ruser3@example.com\tuser4@example.com",
    ]
    # --- e-mail: the leading \b (Python's Unicode word boundary)
    t += [
        "+abc@ex.com at the very start (no boundary before '+')",
        " +abc@ex.com after a space",
        "x+abc@ex.com",
        "-abc@ex.com",
        "é+abc@ex.com",
        "é-abc@ex.com",
        "éabc@ex.com",
        "e\u0301abc@ex.com (combining acute U+0301 before: not a Python word char)",
        "²abc@ex.com (superscript two: a Python word char, category No)",
        "Ⅻabc@ex.com (roman numeral twelve, Nl)",
        "٣abc@ex.com (Arabic-Indic digit, Nd)",
        "\u200dabc@ex.com (ZWJ before)",
        "\u203fabc@ex.com (undertie U+203F, Pc)",
        "_abc@ex.com",
        "\u00b7abc@ex.com (middle dot)",
        "中abc@ex.com",
        "\U0001d7d8abc@ex.com (mathematical double-struck digit zero)",
        "ß.abc@ex.com",
        "a\u0300@ex.com b\u0300c@ex.com",
        "\u24b6abc@ex.com (circled A, So but Other_Alphabetic)",
        "\u2460abc@ex.com (circled one, No)",
        "\uff3fabc@ex.com (fullwidth low line, Pc)",
        "\u200cabc@ex.com (ZWNJ before)",
        "\u0903abc@ex.com (Devanagari visarga, Mc)",
    ]
    # --- IPv4: validator (is_global on Python 3.11.7), leading zeros, longer digit runs
    t += [
        "Server at 8.8.8.8 responded.",
        "8.8.8.8.",
        "dns 1.1.1.1:53",
        "private 192.168.0.1 10.0.0.1 172.16.5.4 172.31.255.255 then public 172.32.0.1",
        "loopback 127.0.0.1 127.255.255.254",
        "link-local 169.254.1.1",
        "multicast 224.0.0.251 239.255.255.250",
        "reserved 240.0.0.1 254.1.2.3 broadcast 255.255.255.255",
        "this-network 0.0.0.0 0.1.2.3",
        "shared 100.64.0.1 100.127.255.255 100.128.0.1 100.63.255.255",
        "ietf 192.0.0.0 192.0.0.7 192.0.0.8 192.0.0.9 192.0.0.10 192.0.0.170 192.0.0.171 192.0.0.172 192.0.0.255",
        "docs 192.0.2.1 198.51.100.7 203.0.113.9 benchmark 198.18.0.1 198.19.255.255 198.20.0.1",
        "6to4 192.88.99.1 and 192.0.1.1",
        "leading zeros 8.8.8.08 08.8.8.8 010.0.0.1 8.8.008.8 0.0.0.00",
        "8.8.8.256 256.8.8.8 999.999.999.999",
        "1.2.3 1.2.3.4.5 12345.6.7.8 1.2.3.4567 v1.2.3.4 ver 2.10.3.1",
        "::ffff:8.8.8.8 2001:4860:4860::8888 [2001:db8::1] fe80::1",
        "8.8.8.8/24 and 8.8.8.0/24",
        "\uff18.\uff18.\uff18.\uff18 (fullwidth) \u0668.\u0668.\u0668.\u0668 (Arabic-Indic)",
        "1.1.1.1 2.2.2.2 3.3.3.3 4.4.4.4 5.5.5.5 6.6.6.6 7.7.7.7",
        "18.8.8.81 and 118.8.8.811",
        "a8.8.8.8b",
        "version 1.2.3.4 of the software",
        "user@8.8.8.8 and 8.8.8.8@example.com",
    ]
    # --- many matches in one document, interleaved
    parts = []
    for k in range(25):
        parts.append(f"person{k}@mail{k}.example.com")
        parts.append(f"{11 + k}.{k}.{2 * k}.{k + 1}")
        parts.append(f"10.0.{k}.1")
    t.append(" ".join(parts))
    t += ["No PII again.", "last one: z@z.zz 9.9.9.9"]
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--versions", default=DEFAULT_VERSIONS)
    args = ap.parse_args()

    from datatrove.data import Document
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.formatters.pii import public_ip_validator

    tasks = []
    for name, rel, field in TASKS:
        path = os.path.join(DATA, rel)
        texts = [obj.get(field) for _, obj in iter_jsonl_gz(path)]
        tasks.append((name, rel, field, texts, False))
    tasks.append(("adversarial", None, None, adversarial_texts(), True))

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".tmp"
    raw = open(tmp, "wb")
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0)
    out = io.TextIOWrapper(gz, encoding="utf-8", newline="\n")

    rows_by_task = {}
    summary = {}
    for name, rel, field, texts, store_all in tasks:
        fmt = PIIFormatter()  # all defaults; one fresh instance per task (= per datatrove rank)
        fed = [(i, x) for i, x in enumerate(texts) if x]
        docs = (Document(text=x, id=f"{name}/{i}", metadata={}) for i, x in fed)
        outs = {}
        for doc in fmt.run(docs, rank=0, world_size=1):  # datatrove's own loop: doc.text = format(doc.text)
            outs[int(doc.id.rsplit("/", 1)[1])] = doc.text
        assert len(outs) == len(fed)
        rows = []
        st = {"records": len(texts), "fed": len(fed), "changed": 0, "emails": 0, "ips": 0, "ips_kept": 0}
        for i, x in enumerate(texts):
            if not x:
                rows.append({"task": name, "i": i, "skipped": "null" if x is None else "empty"})
                continue
            o = outs[i]
            # Independent counts with the formatter's own compiled patterns (no state touched).
            n_email = len(fmt.emails_replacer.regex.findall(x))
            after_email = fmt.emails_replacer.regex.sub("E", x)
            ip_matches = [m.group(0) for m in fmt.ip_replacer.regex.finditer(after_email)]
            n_ip_kept = sum(1 for m in ip_matches if not public_ip_validator(m, public_only=True))
            row = {
                "task": name,
                "i": i,
                "in_sha256": sha(x),
                "out_sha256": sha(o),
                "changed": o != x,
                "n_email": n_email,
                "n_ip": len(ip_matches),
                "n_ip_kept": n_ip_kept,
            }
            if o != x or store_all:
                row["text"] = x
                row["out"] = o
            rows.append(row)
            st["changed"] += o != x
            st["emails"] += n_email
            st["ips"] += len(ip_matches) - n_ip_kept
            st["ips_kept"] += n_ip_kept
        st["final_counters"] = {"email": fmt.emails_replacer._replace_i, "ip": fmt.ip_replacer._replace_i}
        # Replay check: the counters must equal (replacements made) mod len(replacements).
        assert fmt.emails_replacer._replace_i == st["emails"] % len(fmt.emails_replacer.replacements)
        assert fmt.ip_replacer._replace_i == st["ips"] % len(fmt.ip_replacer.replacements)
        rows_by_task[name] = rows
        summary[name] = st
        print(name, json.dumps(st), flush=True)

    probe = PIIFormatter()
    meta = {
        "format": "grist pii golden v1",
        "tool": "datatrove.pipeline.formatters.PIIFormatter() (datatrove 0.10.1, all defaults)",
        "python": platform.python_version(),
        "replay": (
            "For each task in order: a fresh formatter (both replacement counters at 0); feed the task's "
            "records in increasing i, skipping records marked skipped; counters carry across documents of "
            "the task and never across tasks. Per document: e-mails first, then IPs on the result. "
            "Rows without 'text' are unchanged (out == input; compare in_sha256/out_sha256 with the "
            "source record read from the data file named in 'tasks')."
        ),
        "tasks": [
            {"task": n, "source": r, "field": f, **summary[n]} for n, r, f, _, _ in tasks
        ],
        "email_regex": probe.emails_replacer.regex.pattern,
        "email_replacements": list(probe.emails_replacer.replacements),
        "ip_regex": probe.ip_replacer.regex.pattern,
        "ip_replacements": list(probe.ip_replacer.replacements),
    }
    out.write(json.dumps({"_meta": meta}, ensure_ascii=False) + "\n")
    for name, *_ in tasks:
        for row in rows_by_task[name]:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    out.close()
    raw.close()
    os.replace(tmp, args.out)

    if args.versions:
        write_block(args.versions, "pii", versions_block(args.out, summary))


def ver(p):
    try:
        return importlib_metadata.version(p)
    except importlib_metadata.PackageNotFoundError:
        return "not installed"


def versions_block(out_path: str, summary: dict) -> str:
    lines = [
        f"fixture={os.path.basename(out_path)} sha256={sha256_file(out_path)} bytes={os.path.getsize(out_path)}",
        f"datatrove=={ver('datatrove')} python=={platform.python_version()}",
        "tool=PIIFormatter() defaults; one fresh instance per task, BaseFormatter.run() over the task's documents in order",
    ]
    for name, st in summary.items():
        lines.append(f"task={name} {json.dumps(st, sort_keys=True)}")
    return "\n".join(lines) + "\n"


def write_block(path: str, name: str, body: str) -> None:
    """Replace (or append) the block `# --- name ---` .. `# --- end name ---` in VERSIONS_crawl.txt."""
    begin, end = f"# --- {name} ---\n", f"# --- end {name} ---\n"
    old = open(path).read() if os.path.exists(path) else ""
    if not old:
        old = "# Versions that produced the crawl-stage parity fixtures (tests/parity/crawl_goldens.sh)\n"
    if begin in old and end in old:
        pre, rest = old.split(begin, 1)
        _, post = rest.split(end, 1)
        new = pre + begin + body + end + post
    else:
        new = old + begin + body + end
    with open(path, "w") as f:
        f.write(new)


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
