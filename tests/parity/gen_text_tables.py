#!/usr/bin/env python3
"""Generate src/text/tables.rs: the data of spaCy's blank English tokenizer and the Python
string predicates that datatrove's filters rely on.

Run it with the parity venv (see make_goldens.sh), which pins spacy==3.8.18 and datatrove 0.10.1:

    ~/.cache/grist/parity-venv/bin/python tests/parity/gen_text_tables.py > src/text/tables.rs

Everything is read from the installed packages: the prefix / suffix / infix rule lists of
`spacy.blank("en")`, its special cases, its URL pattern and the sentencizer's punctuation, plus
Python 3's own `str.isspace`, `str.isalpha` and Unicode categories. Character classes are
expanded by testing every code point with Python's `re`, so the Rust side needs no regex
translation for them. Rules that carry lookarounds are matched against the exact strings spaCy
builds them from; an unknown rule stops the script, so a spaCy upgrade cannot slip through
silently.
"""

import re
import sys
import unicodedata

import datatrove.utils.text as dt_text
import spacy
from spacy.attrs import ORTH
from spacy.lang import char_classes as cc
from spacy.lang.tokenizer_exceptions import URL_MATCH
from spacy.pipeline.sentencizer import Sentencizer

MAX_CP = 0x110000
SURROGATES = range(0xD800, 0xE000)


def ranges_of(pred):
    out = []
    start = None
    for cp in range(MAX_CP + 1):
        ok = cp < MAX_CP and cp not in SURROGATES and pred(chr(cp))
        if ok and start is None:
            start = cp
        elif not ok and start is not None:
            out.append((start, cp - 1))
            start = None
    return out


def class_ranges(cls_pattern):
    rx = re.compile(cls_pattern)
    return ranges_of(lambda c: rx.fullmatch(c) is not None)


def rust_ranges(rs):
    body = ", ".join(f"(0x{a:X}, 0x{b:X})" for a, b in rs)
    return f"&[{body}]"


def rust_str(s):
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif c.isprintable() and c != "\x7f":
            out.append(c)
        else:
            out.append(f"\\u{{{ord(c):x}}}")
    return '"' + "".join(out) + '"'


# ---- classes used by spaCy's lookaround rules, rebuilt as spacy/lang/punctuation.py builds them
AL, AU, A = cc.ALPHA_LOWER, cc.ALPHA_UPPER, cc.ALPHA
Q, P, H = cc.CONCAT_QUOTES, cc.PUNCT, cc.HYPHENS
CLASS_NAMES = {}


def named_class(name, pattern):
    CLASS_NAMES[name] = class_ranges(pattern)
    return name


DIGIT = named_class("DIGIT", "[0-9]")
DIGIT_OR_DASH = named_class("DIGIT_OR_DASH", "[0-9-]")
SUFFIX_DOT_BEHIND = named_class(
    "SUFFIX_DOT_BEHIND", "[0-9{al}{e}{p}(?:{q})]".format(al=AL, e=r"%²\-\+", q=Q, p=P)
)
UPPER = named_class("UPPER", f"[{AU}]")
DEGREE = named_class("DEGREE", "[°]")
TEMP_UNIT = named_class("TEMP_UNIT", "[FfCcKk]")
LOWER_OR_QUOTE = named_class("LOWER_OR_QUOTE", f"[{AL}{Q}]")
UPPER_OR_QUOTE = named_class("UPPER_OR_QUOTE", f"[{AU}{Q}]")
ALPHA = named_class("ALPHA", f"[{A}]")
ALPHA_OR_DIGIT = named_class("ALPHA_OR_DIGIT", f"[{A}0-9]")
ARITH = named_class("ARITH", r"[+\-\*^]")
INFIX_SYM = named_class("INFIX_SYM", r"[:<>=/]")


def alts(s):
    return [re.sub(r"\\(.)", r"\1", x) for x in s.split("|")]


# entry -> (behind classes, body, ahead); body is ("lit", [alternatives]) or ("class", name)
# or ("dots",); ahead is None, ("is", name) or ("not", name).
KNOWN = {
    r"\+(?![0-9])": ([], ("lit", ["+"]), ("not", DIGIT)),
    r"\.\.+": ([], ("dots",), None),
    r"(?<=[0-9])\+": ([DIGIT], ("lit", ["+"]), None),
    r"(?<=°[FfCcKk])\.": ([DEGREE, TEMP_UNIT], ("lit", ["."]), None),
    r"(?<=[0-9])(?:{c})".format(c=cc.CURRENCY): ([DIGIT], ("lit", alts(cc.CURRENCY)), None),
    r"(?<=[0-9])(?:{u})".format(u=cc.UNITS): ([DIGIT], ("lit", alts(cc.UNITS)), None),
    r"(?<=[0-9{al}{e}{p}(?:{q})])\.".format(al=AL, e=r"%²\-\+", q=Q, p=P): (
        [SUFFIX_DOT_BEHIND],
        ("lit", ["."]),
        None,
    ),
    r"(?<=[{au}][{au}])\.".format(au=AU): ([UPPER, UPPER], ("lit", ["."]), None),
    r"(?<=[0-9])[+\-\*^](?=[0-9-])": ([DIGIT], ("class", ARITH), ("is", DIGIT_OR_DASH)),
    r"(?<=[{al}{q}])\.(?=[{au}{q}])".format(al=AL, au=AU, q=Q): (
        [LOWER_OR_QUOTE],
        ("lit", ["."]),
        ("is", UPPER_OR_QUOTE),
    ),
    r"(?<=[{a}]),(?=[{a}])".format(a=A): ([ALPHA], ("lit", [","]), ("is", ALPHA)),
    r"(?<=[{a}0-9])(?:{h})(?=[{a}])".format(a=A, h=H): (
        [ALPHA_OR_DIGIT],
        ("lit", alts(H)),
        ("is", ALPHA),
    ),
    r"(?<=[{a}0-9])[:<>=/](?=[{a}])".format(a=A): ([ALPHA_OR_DIGIT], ("class", INFIX_SYM), ("is", ALPHA)),
}
ICON_CLASSES = {}


def translate(entry):
    if entry in KNOWN:
        return KNOWN[entry]
    if entry.startswith("[") and entry.endswith("]") and entry.count("[") == 1:
        name = f"CLASS_{len(ICON_CLASSES)}"
        for k, v in ICON_CLASSES.items():
            if v == entry:
                name = k
                break
        else:
            ICON_CLASSES[name] = entry
            CLASS_NAMES[name] = class_ranges(entry)
        return ([], ("class", name), None)
    lit = re.sub(r"\\(.)", r"\1", entry)
    if not re.search(r"(?<!\\)[.\[\](){}*+?|^$]", entry) and re.fullmatch(entry, lit):
        return ([], ("lit", [lit]), None)
    sys.exit(f"gen_text_tables.py: unknown spaCy affix rule {entry!r}; extend KNOWN")


def rust_pattern(p):
    behind, body, ahead = p
    b = "&[" + ", ".join(behind) + "]"
    if body[0] == "lit":
        bd = "Body::Lit(&[" + ", ".join(rust_str(x) for x in body[1]) + "])"
    elif body[0] == "class":
        bd = f"Body::Class({body[1]})"
    else:
        bd = "Body::Dots"
    if ahead is None:
        ah = "Ahead::Any"
    elif ahead[0] == "is":
        ah = f"Ahead::Is({ahead[1]})"
    else:
        ah = f"Ahead::Not({ahead[1]})"
    return f"    Pattern {{ behind: {b}, body: {bd}, ahead: {ah} }},"


def python_class_body(pred_ranges):
    out = []
    for a, b in pred_ranges:
        out.append(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}")
    return "".join(out)


def url_pattern_for_rust(pattern, word, space, digit):
    """Rewrite Python escapes into the Rust regex dialect, with Python's own \\w, \\S and \\d."""
    out = []
    i = 0
    in_class = False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            n = pattern[i + 1]
            if n == "u":
                out.append(f"\\x{{{pattern[i + 2 : i + 6]}}}")
                i += 6
                continue
            if n == "U":
                out.append(f"\\x{{{int(pattern[i + 2 : i + 10], 16):X}}}")
                i += 10
                continue
            if n == "w":
                out.append(word if in_class else f"[{word}]")
            elif n == "d":
                out.append(digit if in_class else f"[{digit}]")
            elif n == "S":
                assert not in_class
                out.append(f"[^{space}]")
            elif n in "sWD":
                sys.exit(f"gen_text_tables.py: URL pattern uses \\{n}; extend the translation")
            else:
                out.append(c + n)
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
        elif c == "]" and in_class:
            in_class = False
        out.append(c)
        i += 1
    s = "".join(out)
    assert s.startswith("(?u)")
    return s[4:]


def main():
    nlp = spacy.blank("en")
    d = nlp.Defaults
    prefixes = [translate(e) for e in d.prefixes if e.strip()]
    suffixes = [translate(e) for e in d.suffixes if e.strip()]
    infixes = [translate(e) for e in d.infixes if e.strip()]
    assert nlp.tokenizer.token_match is None

    rules = nlp.tokenizer.rules
    specials = []
    for key in sorted(rules):
        orths = [sub[ORTH] for sub in rules[key]]
        assert "".join(orths) == key
        specials.append((key, orths))

    space = ranges_of(str.isspace)
    word = class_ranges(r"\w")
    digit = class_ranges(r"\d")
    url = url_pattern_for_rust(
        URL_MATCH.__self__.pattern,
        python_class_body(word),
        python_class_body(space),
        python_class_body(digit),
    )

    w = sys.stdout.write
    w("// @generated by tests/parity/gen_text_tables.py: do not edit.\n")
    w(f"// spaCy {spacy.__version__} (MIT licence, (c) ExplosionAI GmbH) blank English tokenizer data,\n")
    w(f"// datatrove (Apache-2.0) punctuation sets, and Python {sys.version.split()[0]} string predicates\n")
    w(f"// (Unicode {unicodedata.unidata_version}).\n\n")
    w("use super::affix::{Ahead, Body, Pattern};\n\n")
    w("pub type Ranges = &'static [(u32, u32)];\n\n")
    w("/// `str.isspace()`.\npub static PY_SPACE: Ranges = " + rust_ranges(space) + ";\n")
    w("/// `re` `\\d` on `str`: Unicode decimal digits.\npub static PY_DECIMAL: Ranges = " + rust_ranges(digit) + ";\n")
    w("/// `str.isalpha()`.\npub static PY_ALPHA: Ranges = " + rust_ranges(ranges_of(str.isalpha)) + ";\n")
    w(
        "/// `re` `\\w` on `str` (what `\\b` tests): `str.isalnum()` or `_`.\npub static PY_WORD: Ranges = "
        + rust_ranges(class_ranges(r"\w"))
        + ";\n"
    )
    w(
        "/// Unicode general category P* (spaCy's `is_punct`).\npub static UNICODE_PUNCT: Ranges = "
        + rust_ranges(ranges_of(lambda c: unicodedata.category(c).startswith("P")))
        + ";\n"
    )
    w(
        "/// datatrove `PUNCTUATION_SET`.\npub static DATATROVE_PUNCTUATION: Ranges = "
        + rust_ranges(ranges_of(lambda c: c in dt_text.PUNCTUATION_SET))
        + ";\n"
    )
    assert all(len(x) == 1 for x in dt_text.TERMINAL_PUNCTUATION)
    w(
        "/// datatrove `TERMINAL_PUNCTUATION`.\npub static DATATROVE_TERMINAL_PUNCTUATION: Ranges = "
        + rust_ranges(ranges_of(lambda c: c in dt_text.TERMINAL_PUNCTUATION))
        + ";\n"
    )
    punct_chars = Sentencizer.default_punct_chars
    assert all(len(x) == 1 for x in punct_chars)
    w(
        "/// The sentencizer's default `punct_chars`.\npub static SENTENCE_END: Ranges = "
        + rust_ranges(ranges_of(lambda c: c in punct_chars))
        + ";\n\n"
    )
    for name, rs in CLASS_NAMES.items():
        w(f"static {name}: Ranges = {rust_ranges(rs)};\n")
    for title, pats in (("PREFIXES", prefixes), ("SUFFIXES", suffixes), ("INFIXES", infixes)):
        w(f"\npub static {title}: &[Pattern] = &[\n")
        for p in pats:
            w(rust_pattern(p) + "\n")
        w("];\n")
    w("\n/// Special cases: chunk -> its tokens.\npub static SPECIAL_CASES: &[(&str, &[&str])] = &[\n")
    for key, orths in specials:
        w(f"    ({rust_str(key)}, &[{', '.join(rust_str(o) for o in orths)}]),\n")
    w("];\n\n")
    w("/// spaCy's `URL_MATCH`, with Python's `\\w`, `\\S` and `\\d` spelled out.\n")
    w("pub static URL_PATTERN: &str = " + rust_str(url) + ";\n")


if __name__ == "__main__":
    main()
