#!/usr/bin/env python3
"""Golden decisions of datatrove 0.10.1's `URLFilter()` (integrated block lists) on real and made-up URLs.

Run through tests/parity/crawl_goldens.sh (it builds the pinned venv). Direct use:

    python tests/parity/url_filter_goldens.py [--out PATH] [--versions PATH]

`URLFilter()` is built with all defaults. Each URL goes into a fresh `Document(metadata={"url": u})`
and through the filter's own `filter(doc)`; the result is decoded with datatrove's own
`base_filter.get_filter_result` (what `BaseFilter.run` does): keep, or drop with a reason string.
The filter is stateless per document, so the URLs are de-duplicated (first occurrence wins).

Offline and deterministic: the block lists come from the tarball inside the datatrove wheel
(extracted by datatrove into $HF_ASSETS_CACHE, which this script points at ~/.cache/grist/hf-assets
unless already set). tldextract's Public Suffix List is forced to the snapshot bundled in the
tldextract wheel: TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS="" (no HTTP fetch) and TLDEXTRACT_CACHE=""
(no disk cache), both read by the `TLDExtract()` that `URLFilter.__init__` constructs. Without them
tldextract would try publicsuffix.org first and cache whatever it got.

URL sources, in this order (paths relative to $GRIST_PARITY_DATA, default /work/shared/data):
  c4        web_en/c4_sample/c4_sample_docs000-799.jsonl.gz             `url`
  wceb2026  web_en/wceb2026_pages/pages_first800.jsonl.gz                `url`
  dolma     web_en/dolma_fixtures/*.json[l].gz                           `id` and `metadata.url`
  warc      web_en/wceb2026_warc/*.warc.gz, web_en/dolma_fixtures/warc__*.warc.gz   WARC-Target-URI
            of every record that has one (warcinfo has none)
  adversarial  generated below (uses real entries of the integrated lists)

Output (gzip, mtime 0): tests/fixtures/parity/url_filter.jsonl.gz. Line 1 is {"_meta": {...}}; then
one line per distinct URL:
  {"url", "keep": bool|null, "reason": str|null, "src": source tag,
   "tld": [subdomain, domain, suffix] (tldextract's split, as URLFilter sees it),
   "error": "<exception>" (only when filter() raised; keep is then null)}
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import io
import json
import os
import platform
import re
import sys
import traceback
from importlib import metadata as importlib_metadata

os.environ.setdefault("HF_ASSETS_CACHE", os.path.expanduser("~/.cache/grist/hf-assets"))
os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""
os.environ["TLDEXTRACT_CACHE"] = ""

DATA = os.environ.get("GRIST_PARITY_DATA", "/work/shared/data")
WEB_EN = os.path.join(DATA, "web_en")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(REPO, "tests", "fixtures", "parity", "url_filter.jsonl.gz")
DEFAULT_VERSIONS = os.path.join(REPO, "tests", "fixtures", "parity", "VERSIONS_crawl.txt")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pii_goldens import sha256_file, write_block  # noqa: E402


def iter_jsonl_gz(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def real_urls():
    yield from (("c4", o.get("url")) for o in iter_jsonl_gz(os.path.join(WEB_EN, "c4_sample", "c4_sample_docs000-799.jsonl.gz")))
    yield from (("wceb2026", o.get("url")) for o in iter_jsonl_gz(os.path.join(WEB_EN, "wceb2026_pages", "pages_first800.jsonl.gz")))
    for p in sorted(glob.glob(os.path.join(WEB_EN, "dolma_fixtures", "*.json*.gz"))):
        for o in iter_jsonl_gz(p):
            yield "dolma", o.get("id")
            md = o.get("metadata")
            if isinstance(md, dict):
                yield "dolma", md.get("url")
    from warcio.archiveiterator import ArchiveIterator

    warcs = sorted(glob.glob(os.path.join(WEB_EN, "wceb2026_warc", "*.warc.gz")))
    warcs += sorted(glob.glob(os.path.join(WEB_EN, "dolma_fixtures", "warc__*.warc.gz")))
    for p in warcs:
        with open(p, "rb") as f:
            for rec in ArchiveIterator(f):
                u = rec.rec_headers.get_header("WARC-Target-URI")
                if u is not None:
                    yield "warc", u


def adversarial_urls(flt):
    """Made-up URLs, plus real entries of the integrated lists picked deterministically."""
    ex = flt.tldextractor
    doms = sorted(flt.block_listed_domains)
    urls = sorted(flt.block_listed_url)
    out = []

    def add(tag, *us):
        out.extend((tag, u) for u in us)

    # --- block-listed domains: registrable ones, and ones that are a subdomain of a non-listed domain
    pure, sub, ip_like, puny = [], [], [], []
    for d in doms[::997]:
        r = ex(d)
        rd = r.top_domain_under_public_suffix
        if re.fullmatch(r"[0-9.]+", d):
            ip_like.append(d)
        elif "xn--" in d:
            puny.append(d)
        elif rd == d:
            pure.append(d)
        elif rd and rd not in flt.block_listed_domains and r.fqdn == d:
            sub.append(d)
    puny += [d for d in doms if d.startswith("xn--") and ex(d).top_domain_under_public_suffix == d][:3]
    for d in pure[:6] + pure[len(pure) // 2 : len(pure) // 2 + 2]:
        add("adv_domain", f"http://{d}/", f"https://www.{d}/some/page?x=1", f"http://a.b.c.{d}", d, f"//{d}/x",
            f"http://{d.upper()}/", f"http://{d}./", f"http://{d}..", f"http://user:pw@{d}:8080/x", f"HTTP://{d}",
            f"http://{d}:443", f"http://{d}\u3002/", f"http://{d}\\path", f"http://{d}#frag", f"http://{d}?q",
            f"http://{d}@example.com/", f"http://example.com@{d}/", f"http://{d}.example.com/")
    for d in sub[:8]:
        labels = d.split(".")
        add("adv_subdomain", f"http://{d}/", f"https://{d}/path", f"http://www.{d}/", f"http://{d.upper()}/",
            f"http://{'.'.join(labels[1:])}/")
    for d in ip_like[:3]:
        add("adv_ip_listed", f"http://{d}/", f"http://{d}:80/x")
    for d in puny[:4]:
        r = ex(d)
        try:
            uni = ".".join(lab.encode("ascii").decode("idna") if lab.startswith("xn--") else lab for lab in d.split("."))
        except UnicodeError:
            uni = None
        add("adv_punycode_listed", f"http://{d}/", f"http://www.{d}/")
        if uni and uni != d:
            add("adv_punycode_listed", f"http://{uni}/")
    # --- block-listed full URLs (entries have no scheme; the check is exact string equality)
    clean = []
    for u in urls:
        r = ex(u)
        if r.top_domain_under_public_suffix in flt.block_listed_domains or r.fqdn in flt.block_listed_domains:
            continue
        clean.append(u)
    for u in clean[:4] + clean[len(clean) // 2 : len(clean) // 2 + 2] + [u for u in clean if u != u.lower()][:2]:
        add("adv_url_listed", u, "http://" + u, "https://" + u, u + "/", u.upper())
    listed_with_dom = [u for u in urls if ex(u).top_domain_under_public_suffix in flt.block_listed_domains][:2]
    add("adv_url_listed", *listed_with_dom)
    # --- banned words (whole tokens, case-sensitive), soft words (distinct tokens, threshold 2), subwords
    soft = sorted(flt.soft_banned_words)
    hard = sorted(flt.banned_words)
    subw = sorted(flt.banned_subwords)
    for w in hard[:3] + hard[100:102] + hard[-2:]:
        add("adv_banned_word", f"http://example.com/{w}", f"http://example.com/{w.upper()}", f"http://{w}.example.com/",
            f"http://example.com/x-{w}-y", f"http://example.com/{w}s", f"http://example.com/?q={w}")
    s1, s2, s3 = "nude", "webcam", "lingerie"
    add("adv_soft",
        "http://example.com/",
        f"http://example.com/{s1}",
        f"http://example.com/{s1}/{s1}/{s1}",
        f"http://example.com/{s1}/{s2}",
        f"http://example.com/{s1}-{s2}-{s3}",
        f"http://example.com/{s1.upper()}/{s2}",
        f"http://example.com/{s1}{s2}",
        f"http://{s1}.example.com/{s2}",
        f"http://example.com/{s1}_{s2}",
        "http://example.com/ass/butt",
        "http://example.com/Ass/butt",
        "http://example.com/class/assessment",
        f"http://example.com/{soft[0]}/{soft[-1]}",
        "http://example.com/sex",
        "http://example.com/sex/sexy",
        "http://example.com/sex/free",
        "http://example.com/sexfree",
        "http://example.com/free-sex",
        "http://example.com/brunette/lingerie/naked")
    for w in subw[:3] + subw[60:62] + subw[-2:]:
        add("adv_subword", f"http://example.com/{w}", f"http://example.com/{w.upper()}", f"http://{w}.example.com",
            f"http://example.com/{'-'.join(w)}", f"http://example.com/pre{w}post")
    add("adv_subword",
        "https://www.bigblackbookstore.com/",
        "http://www.essexcounty.gov/",
        "http://www.scunthorpe.gov.uk/",
        "http://therapist.example.com/",
        "https://en.wikipedia.org/wiki/Pornography",
        "https://en.wikipedia.org/wiki/Sex_education",
        "http://example.com/ma/ss/age/girl",
        "http://exa-mple.com/porn%20hub",
        "http://example.com/porn\u00e9hub")
    # --- hosts, schemes and syntax tldextract has to cope with
    add("adv_syntax",
        "", " ", "x", "not a url", "http://", "https://", "://", "//", "http:///path", "http://.", "http://..",
        "mailto:someone@example.com", "javascript:void(0)", "file:///etc/passwd", "data:text/plain,hello",
        "ftp://ftp.example.org/pub", "ws://example.com/socket", "about:blank", "urn:isbn:0451450523",
        "http://localhost/", "http://localhost:8080/x", "http://127.0.0.1:8080/", "http://8.8.8.8/",
        "http://256.1.1.1/", "http://1.2.3.4.5/", "http://0x7f.0.0.1/", "http://01.02.03.04/",
        "http://[::1]/", "http://[2001:db8::1]:8080/x", "http://[::ffff:8.8.8.8]/", "http://[v1.fe]/", "http://[bad/",
        "http://user:pass@example.com:8080/p", "http://user@example.com", "http://example.com\\@evil.com/",
        "http://evil.com#@good.com", "http://good.com@evil.com/", "http://a:b@c:d@example.org/",
        "http://a.b.c.d.e.f.g.co.uk/", "http://co.uk/", "http://uk/", "http://com/", "http://.com/",
        "http://foo.ck/", "http://www.ck/", "http://a.b.ck/", "http://ck/",
        "http://city.kawasaki.jp/", "http://www.city.kawasaki.jp/", "http://foo.kawasaki.jp/", "http://a.foo.kawasaki.jp/",
        "http://x.blogspot.com/", "http://blogspot.com/", "http://foo.github.io/", "http://foo.s3.amazonaws.com/",
        "http://example.com./", "http://example.com.../", "http://example.com\u3002/", "http://example\u3002com/",
        "http://example\uff0ecom/", "http://example\uff61com/",
        "http://例え.テスト/", "http://xn--r8jz45g.xn--zckzah/", "http://münchen.de/", "http://xn--mnchen-3ya.de/",
        "http://MÜNCHEN.DE/", "http://xn--MNCHEN-3YA.DE/", "http://bücher.example/", "http://xn--bcher-kva.example/",
        "http://xn--invalid-punycode-.com/", "http://xn--.com/", "http://example.xn--p1ai/", "http://пример.рф/",
        "http://example.com:abc/", "http://example.com:/", "http://exa mple.com/", "  http://example.com/  ",
        "http://example.com/\n", "\thttp://example.com/", "http://EXAMPLE.COM/PATH", "HtTpS://WwW.ExAmPlE.CoM",
        "http://www.example.com/" + "a/" * 5000,
        "http://" + "sub." * 100 + "example.com/",
        "example.com", "www.example.com/path", "example.com:80", "1.2.3.4",
        "http://example.com/%70%6F%72%6E", "http://%65xample.com/", "http://example.com/?url=http://porn.com",
        "http://example.com/path#porn", "https://example.com/a/b?c=d&e=f#g")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--versions", default=DEFAULT_VERSIONS)
    args = ap.parse_args()

    import tldextract
    from datatrove.data import Document
    from datatrove.pipeline.filters.base_filter import get_filter_result
    from datatrove.pipeline.filters.url_filter import URLFilter

    flt = URLFilter()  # all defaults
    tx = flt.tldextractor
    assert tx.suffix_list_urls == (), tx.suffix_list_urls
    assert not tx._cache.enabled
    assert tx.include_psl_private_domains is False and tx.fallback_to_snapshot is True
    flt.download_data()  # load the integrated lists (filter() does this on first call)

    seen = set()
    rows = []
    counts: dict = {}
    for src, url in list(real_urls()) + adversarial_urls(flt):
        if url is None or url in seen:
            continue
        seen.add(url)
        r = tx(url)
        row = {"url": url, "src": src, "tld": [r.subdomain, r.domain, r.suffix]}
        try:
            keep, reason = get_filter_result(flt.filter(Document(text="", id=str(len(rows)), metadata={"url": url})))
            row["keep"], row["reason"] = bool(keep), reason
            key = "keep" if keep else reason
        except Exception as e:  # noqa: BLE001 - datatrove would crash the pipeline here
            row["keep"], row["reason"], row["error"] = None, None, f"{type(e).__name__}: {e}"
            key = f"error:{type(e).__name__}"
        c = counts.setdefault(src if not src.startswith("adv") else "adversarial", {})
        c[key] = c.get(key, 0) + 1
        rows.append(row)

    def setsha(s):
        return hashlib.sha256("".join(x + "\n" for x in sorted(s)).encode("utf-8")).hexdigest()

    lists = {
        name: {"count": len(getattr(flt, name)), "sha256_sorted_lines": setsha(getattr(flt, name))}
        for name in ("block_listed_domains", "block_listed_url", "banned_words", "banned_subwords", "soft_banned_words")
    }
    snap = os.path.join(os.path.dirname(tldextract.__file__), ".tld_set_snapshot")
    psl_version = next((ln.strip() for ln in open(snap, encoding="utf-8") if ln.startswith("// VERSION:")), "?")
    from datatrove.utils._import_utils import ASSETS_PATH

    tarball = os.path.join(ASSETS_PATH, "url_filterblacklistsv0_3_0.tar.gz")
    meta = {
        "format": "grist url_filter golden v1",
        "tool": "datatrove.pipeline.filters.URLFilter() (datatrove 0.10.1, all defaults, integrated lists)",
        "decode": "keep = filter(doc) is True; else (False, reason); reason in domain|subdomain|url|hard_blacklisted|soft_blacklisted|blacklisted_subword",
        "tldextract": f"{ver('tldextract')} bundled PSL snapshot ({psl_version}), include_psl_private_domains=False, no fetch, no cache",
        "lists": lists,
        "counts": counts,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".tmp"
    raw = open(tmp, "wb")
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0)
    out = io.TextIOWrapper(gz, encoding="utf-8", newline="\n")
    out.write(json.dumps({"_meta": meta}, ensure_ascii=False) + "\n")
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    out.close()
    raw.close()
    os.replace(tmp, args.out)
    print(json.dumps({"urls": len(rows), "counts": counts, "lists": lists}, indent=1), flush=True)

    if args.versions:
        body = [
            f"fixture={os.path.basename(args.out)} sha256={sha256_file(args.out)} bytes={os.path.getsize(args.out)} urls={len(rows)}",
            f"datatrove=={ver('datatrove')} tldextract=={ver('tldextract')} pyahocorasick=={ver('pyahocorasick')} "
            f"fasteners=={ver('fasteners')} idna=={ver('idna')} warcio=={ver('warcio')} python=={platform.python_version()}",
            f"tldextract .tld_set_snapshot sha256={sha256_file(snap)} bytes={os.path.getsize(snap)} {psl_version}",
            f"datatrove assets/url_filterblacklistsv0_3_0.tar.gz sha256={sha256_file(tarball)} bytes={os.path.getsize(tarball)}",
        ]
        for fn in ("banned_words.txt", "banned_subwords.txt", "soft_banned_words.txt"):
            p = os.path.join(ASSETS_PATH, fn)
            body.append(f"datatrove assets/{fn} sha256={sha256_file(p)} bytes={os.path.getsize(p)}")
        for name, v in lists.items():
            body.append(f"list {name} count={v['count']} sha256_sorted_lines={v['sha256_sorted_lines']}")
        for src, c in counts.items():
            body.append(f"counts {src} {json.dumps(c, sort_keys=True)}")
        body.append("# full environment (pip freeze equivalent)")
        for name, v in sorted({(d.metadata["Name"].lower(), d.version) for d in importlib_metadata.distributions()}):
            body.append(f"#   {name}=={v}")
        write_block(args.versions, "url_filter", "\n".join(body) + "\n")


def ver(p):
    try:
        return importlib_metadata.version(p)
    except importlib_metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
