"""What a person is told: messages without server paths or Python internals, and the checks on typed
text (control tokens refused, words outside the model's vocabulary named with a close match).

Front ends (app, widgets, CLI) show :func:`public_message` of an expected error and log the full
exception server-side; anything unexpected becomes :data:`INTERNAL` plus a log entry.
"""
from __future__ import annotations

import difflib
import re
from typing import Iterable

from .backbones.tokenizer import SPECIAL_TOKENS

INTERNAL = "something went wrong on the server while doing this; the server log has the details. Try again"
# an absolute POSIX or Windows path (optionally quoted): reduced to its last component
_PATH = re.compile(r"(?:[A-Za-z]:\\|/)(?:[^\s'\"<>(),;:]+[/\\])+([^\s'\"<>(),;:/\\]*)")
# Python object reprs such as <_io.BufferedReader name='...'>
_REPR = re.compile(r"<[\w.]+ (?:name|object)[^>]*>")


def public_message(exc: BaseException | str) -> str:
    """The text of an expected error with every server path reduced to its file name and object
    reprs removed (the full text belongs in the server log)."""
    text = str(exc).strip().strip("'\"")
    text = _REPR.sub("the file", text)
    text = _PATH.sub(lambda m: m.group(1) or "the folder", text)
    if not text and isinstance(exc, BaseException):
        return type(exc).__name__
    return text


def control_tokens(backbone=None) -> set[str]:
    """The model's control tokens as a person could type them (``<image>``, ``[EOS]``, ...)."""
    toks = set(SPECIAL_TOKENS)
    tok = getattr(backbone, "tokenizer", None)
    for attr in ("all_special_tokens", "additional_special_tokens"):
        toks.update(t for t in (getattr(tok, attr, None) or []) if isinstance(t, str))
    return {t for t in toks if len(t) > 1}


def refuse_control_tokens(text: str, backbone=None, what: str = "the question") -> None:
    """Raise ValueError when ``text`` contains one of the model's control tokens (any case)."""
    low = (text or "").lower()
    found = sorted(t for t in control_tokens(backbone) if t.lower() in low)
    if found:
        raise ValueError(f"{what} contains {', '.join(repr(t) for t in found)}: that is one of the model's control "
                         f"tokens, not a word; remove it")


def vocabulary(backbone) -> list[str]:
    """The plain words of a word-level vocabulary (the teaching VLM's); [] for sub-word tokenizers."""
    tok = getattr(backbone, "tokenizer", None)
    get = getattr(tok, "get_vocab", None)
    if get is None or not hasattr(backbone, "unknown_words"):
        return []
    return sorted(w for w in get() if w not in SPECIAL_TOKENS and w.isalnum())


def unknown_word_warnings(backbone, text: str, model: str = "the teaching model") -> list[str]:
    """One warning per word of ``text`` the model reads as [UNK], with the closest known word."""
    finder = getattr(backbone, "unknown_words", None)
    if finder is None or not text:
        return []
    words = _unique(w.lower() for w in finder(text))
    vocab = vocabulary(backbone)
    out = []
    for w in words:
        near = difflib.get_close_matches(w, vocab, n=1, cutoff=0.6)
        hint = f" — did you mean {near[0]!r}?" if near else " — it is read as an unknown word"
        out.append(f"{w!r} is not in {model}'s vocabulary{hint}")
    return out


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for x in items:
        seen.setdefault(x, None)
    return list(seen)
