"""Caption tokenisation in pure Python, after coco-caption's Java ``PTBTokenizer``.

coco-caption runs the Stanford PTB tokenizer of CoreNLP 3.4.1 (``-preserveLines -lowerCase``) and
then drops the tokens in :data:`PUNCTUATION_TOKENS` — a list written in upper case, so the
lower-cased brackets ``-lrb- -rrb- -lcb- -rcb- -lsb- -rsb-`` are *kept*, as are runs like ``!!!``
and ``?!`` (only a lone ``?`` or ``!`` is in the list).  This module re-creates the Java lexer for
what occurs in captions, as a longest-match scanner like the JFlex original:

* clitics split (``don't`` -> ``do n't``, ``dog's`` -> ``dog 's``, an already split ``dog 's``
  keeps ``'s``), ``cannot`` -> ``can not``, ``gonna`` -> ``gon na``;
* abbreviations keep their period (``st.``, ``mr.``, ``ave.``, ``rd.``, ``etc.``, ``u.s.``, ``a.m.``,
  a single letter followed by a space, ``no.`` before a number; CoreNLP's lists, checked against the
  jar), any other word ending a sentence loses it; ``word.,`` keeps it as Java does;
* numbers (``1,000``, ``10:30``, ``3.5``, ``-5``) and fractions (``22 3/4`` is one token joined by
  a no-break space, as Java writes it); ``$ % # * / = < > & + ^ ~ |`` and ``--`` split off.

Checked on the 7,000 COCO caption sentences of ``tests/fixtures/captions_official.json`` against
the jar's own output (see ``tests/test_metrics_official.py``); it can still differ on text that
depends on the next line of the Java input (a single capital letter with a period ending a caption)
and on rare constructs (URLs, e-mail addresses, SGML).  ``backend="official"`` runs the jar itself.
"""
from __future__ import annotations

import re

# coco-caption's list, exactly as written (upper-case brackets never match the lower-cased tokens)
PUNCTUATION_TOKENS = frozenset({"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":",
                                "-", "--", "...", ";"})

# CoreNLP 3.4.1 abbreviations that keep their period (probed against the jar); _ABBREV_CAP only
# when written with a capital (its character classes such as "[M]iss" are case-sensitive)
_ABBREV = frozenset("""adm al ala alex apr ariz assn assoc asst atty attys aug ave bancorp bhd blvd brig bros calif
capt cf cie cmdr co col colo comdr conn corp cos cpl ct dak dec dept det dr drs elec esq est etc ext feb fla fri ft
ga gen gov govs hon inc ind intl invt jan jos jr jul jun kan kans ky lieut lt ltd m maj mar md messrs mfg mich minn
mlle mme mo mon mont mr mrs ms mt mtg natl neb nev nov oct okla penn pfc ph plc pres prof profs pty ptys pvt rd rep
reps rev sen sens sep sept seq sgt spc sq sr st ste supt supts sys tel tenn thu thurs treas tue tues univ va vs vt
wed wis wisc wm wyo""".split())
_ABBREV_CAP = frozenset("ark az del ill la mass miss ore pa tex wash".split())
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "{": "-lcb-", "}": "-rcb-", "[": "-lsb-", "]": "-rsb-"}
_UNICODE = str.maketrans({"\u2019": "'", "\u2018": "`", "\u201c": '"', "\u201d": '"', "\u2014": "--",
                          "\u2013": "--", "\u2026": "...", "\u00a0": " "})
_CLITIC = re.compile(r"(?i)(.+?)(n't|'s|'re|'ve|'ll|'d|'m)")
_ASSIMILATION = re.compile(r"(?i)(gon|wan|got|lem|gim)(na|ta|me)")
_APOS_KEEP = re.compile(r"(?i)[a-z]'[a-z]{2,}|[a-z]*[aeiouy]'[aeiou][a-z]*")
_ACRO = re.compile(r"[^\W\d_](?:\.[^\W\d_])+")

# token patterns, longest match wins (ties: the first listed), as in JFlex
_WORD = r"[^\W_]+(?:(?:[-.'_/]|&(?=[A-Z]))[^\W_]+)*"
_PATTERNS = [
    ("space", r"\s+"),
    ("date", r"\d{1,2}[-/]\d{1,2}[-/]\d{2,4}"),
    ("frac", r"(?:\d{1,4}[- ])?\d{1,4}/\d{1,4}"),
    ("number", r"[-+]?(?:\d*(?:[-.:,]\d+)+|\d+)"),
    ("word", _WORD),
    ("apos", r"'(?:[2-9]0s|till?|em|cause|s|re|ve|ll|d|m|n)(?![^\W_])"),
    ("tag", r"[@#][^\W\d_]\w*|<[A-Za-z!?/][^>\r\n]*>"),
    ("dots", r"\.{2,}|\.(?: \.){1,3}"),
    ("marks", r"[?!]+|--+|#+|@+|_+|\*+|''|``"),
    ("other", r"."),
]
_SCAN = [(name, re.compile(p, re.DOTALL)) for name, p in _PATTERNS]


def _period_kept(word: str, text: str, end: int) -> bool:
    """Whether Java keeps the period that follows ``word`` (at ``text[end]``) on the word."""
    after = text[end + 1:end + 2]
    low = word.lower()
    if low in _ABBREV or (low in _ABBREV_CAP and word[0].isupper()) or _ACRO.fullmatch(word):
        return True
    if len(word) == 1 and word.isalpha():
        return after == " " and not (word in "Ii" and re.match(r" +[A-Z]", text[end + 1:]))
    if low == "no" and re.match(r" ?\d", text[end + 1:]):
        return True
    return after in (",", ";", ":")


def _split_word(word: str) -> list[str]:
    """A lexed word as Java's tokens: clitics, ``cannot`` and assimilations split, odd apostrophes too."""
    low = word.lower()
    if low == "cannot":
        return [word[:3], word[3:]]
    m = _ASSIMILATION.fullmatch(word)
    if m and low in ("gonna", "wanna", "gotta", "lemme", "gimme"):
        return [m.group(1), m.group(2)]
    m = _CLITIC.fullmatch(word)
    if m and "'" not in m.group(1):
        return [m.group(1), m.group(2)]
    if "'" in word and not _APOS_KEEP.fullmatch(word):
        parts = word.split("'")
        return [t for p in parts[:-1] for t in (p, "'")] + [parts[-1]]
    return [word]


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        best, name = None, ""
        for nm, rx in _SCAN:
            m = rx.match(text, i)
            if m and m.end() > i and (best is None or m.end() > best.end()):
                best, name = m, nm
        tok, end = best.group(), best.end()
        if name == "word":
            if end < n and text[end] == "." and _period_kept(tok, text, end):
                tok, end = tok + ".", end + 1
            out.extend(_split_word(tok))
        elif name == "frac":
            out.append(tok.replace(" ", "\u00a0"))
        elif name == "dots":
            out.append("...")
        elif name == "other":
            out.append("''" if tok == '"' else _BRACKETS.get(tok, tok))
        elif name != "space":
            out.append(tok)
        i = end
    return out


def ptb_tokenize(text: str) -> str:
    """``text`` as the space-joined, lower-cased tokens that coco-caption's scorers receive."""
    text = text.translate(_UNICODE)
    return " ".join(t for t in (t.lower() for t in _tokens(text)) if t not in PUNCTUATION_TOKENS)
