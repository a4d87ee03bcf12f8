"""Caption tokenisation in pure Python, after the coco-caption ``PTBTokenizer``.

coco-caption runs the Stanford PTB tokenizer (Java) with lower-casing, then drops the tokens that are
punctuation (``PUNCTUATION_TOKENS``).  This replicates the cases that occur in captions without Java:
lower-case; quotes, brackets and ``. , : ; ? ! ...`` removed (commas and colons inside numbers kept,
as in ``1,000`` and ``10:30``; decimal points and acronyms like ``u.s.`` kept); clitics split as PTB
does (``don't`` -> ``do n't``, ``dog's`` -> ``dog 's``, ``cannot`` -> ``can not``); ``$`` and ``%``
split off; hyphenated words kept whole, lone hyphens dropped.  Rare constructs (abbreviations such
as ``mr.``, ``'90s``) can differ from Stanford's rules, so scores can differ from the Java pipeline in
the third decimal on unusual text; on plain captions the tokens are the same.
"""
from __future__ import annotations

import re

# what coco-caption's tokenizer wrapper removes after PTB tokenisation (lower-cased)
PUNCTUATION_TOKENS = frozenset({"''", "'", "``", "`", "-lrb-", "-rrb-", "-lcb-", "-rcb-", ".", "?", "!", ",", ":",
                                "-", "--", "...", ";"})
_DROP = re.compile(r"[\"(){}?!;]|\.\.\.+|(?<!\d)[,:]|[,:](?!\d)")
_SPLIT_OFF = re.compile(r"([$%])")
_ACRONYM = re.compile(r"(?:[a-z]\.)+")
_CLITIC = re.compile(r"(.+?)(n't|'s|'re|'ve|'ll|'d|'m)")


def _word(tok: str) -> list[str]:
    tok = tok.lstrip("'`-")
    if not _ACRONYM.fullmatch(tok):
        tok = tok.rstrip(".")
    tok = tok.rstrip("-`")
    tok = tok.rstrip("'")  # plural possessive "dogs'" -> "dogs" + "'" (dropped)
    if not tok:
        return []
    if tok == "cannot":
        return ["can", "not"]
    m = _CLITIC.fullmatch(tok)
    return [m.group(1), m.group(2)] if m else [tok]


def ptb_tokenize(text: str) -> str:
    """``text`` as the space-joined, lower-cased tokens that coco-caption's scorers receive."""
    text = text.lower().replace("\n", " ").replace("\r", " ").replace("\t", " ")
    text = text.replace("[", " -lsb- ").replace("]", " -rsb- ")  # PTB escapes; coco-caption keeps these
    text = _SPLIT_OFF.sub(r" \1 ", _DROP.sub(" ", text))
    tokens = [t for tok in text.split() for t in _word(tok)]
    return " ".join(t for t in tokens if t not in PUNCTUATION_TOKENS)
