"""coco-caption's own caption pipeline: the Stanford PTBTokenizer (the CoreNLP 3.4.1 jar that
pycocoevalcap ships, run by Java) and pycocoevalcap's scorers -- ``backend="official"``.

The tokenizer is run as pycocoevalcap's ``PTBTokenizer.tokenize`` runs it: newlines in a caption
become spaces, the captions are joined by newlines into one file (the references in one call, the
candidates in another, each in item order, because the Java lexer looks at the next line), then

    java -cp stanford-corenlp-3.4.1.jar edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase FILE

and each output line loses the tokens of coco-caption's ``PUNCTUATIONS`` list (upper-case brackets
included as written, so ``-lrb-`` stays).  The one change: the file goes to a temporary directory,
not into the installed package.  Java comes from Debian's ``default-jre-headless``.  No model code.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

JAR = "stanford-corenlp-3.4.1.jar"
JAVA_CMD = ["java", "-cp", JAR, "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase"]
# pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS, as written there
PUNCTUATIONS = ("''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
                "...", ";")
INSTALL_JAVA = "apt-get install default-jre-headless (Debian/Ubuntu; any Java 8+ runtime works)"
INSTALL_COCO = "pip install 'pycocoevalcap>=1.2' (or pip install 'mmict-studio[metrics]')"
TOKENIZER_NAME = "java-ptb (CoreNLP 3.4.1 PTBTokenizer, coco-caption)"


def jar_dir() -> Path | None:
    """The folder of pycocoevalcap's tokenizer jar, or None when pycocoevalcap is not installed."""
    try:
        spec = importlib.util.find_spec("pycocoevalcap.tokenizer")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        if (Path(loc) / JAR).is_file():
            return Path(loc)
    return None


def missing() -> list[str]:
    """What the official backend lacks here, as install commands (empty when it can run)."""
    out = []
    if shutil.which("java") is None:
        out.append(f"Java: {INSTALL_JAVA}")
    if jar_dir() is None:
        out.append(f"pycocoevalcap: {INSTALL_COCO}")
    return out


def available() -> bool:
    return not missing()


def require() -> Path:
    lacks = missing()
    if lacks:
        raise RuntimeError("backend 'official' (coco-caption's Java tokenizer + pycocoevalcap) needs "
                           + " and ".join(lacks) + "; backend='builtin' runs without them")
    return jar_dir()  # type: ignore[return-value]


def java_tokenize(sentences: list[str]) -> list[str]:
    """Each sentence as coco-caption tokenises it (one Java call for the whole list)."""
    if not sentences:
        return []
    folder = require()
    text = "\n".join(s.replace("\n", " ") for s in sentences)
    fd, path = tempfile.mkstemp(prefix="mmict-ptb-", suffix=".txt")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
        proc = subprocess.run(JAVA_CMD + [path], cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finally:
        os.remove(path)
    if proc.returncode != 0:
        raise RuntimeError(f"the Java PTBTokenizer failed (exit {proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
    lines = proc.stdout.decode().split("\n")
    if len(lines) < len(sentences):
        raise RuntimeError(f"the Java PTBTokenizer returned {len(lines)} lines for {len(sentences)} captions "
                           "(a caption with a carriage return or other line break?)")
    return [" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS)
            for line in lines[:len(sentences)]]
