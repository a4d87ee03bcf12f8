"""VLibrary: an on-disk library of trained adapters of any method, to list, search, load, compose
and inject.  (M2IV's paper names a "VLibrary" of trained vectors; its design is not public, so
this is our own, simple one: see docs/vlibrary.md.)

Layout: ``ROOT/NAME/`` holds ``adapter/`` (what :meth:`Method.save` writes), ``entry.json``
(task, description, metrics, backbone fingerprint, ...) and, optionally, ``key.safetensors`` (a
retrieval key: the mean LM-space image tokens of a few training examples).  Every entry is
written into a hidden temporary folder inside ROOT and renamed into place, so a crash never
leaves a half-written entry; ``list()`` scans the folders, there is no index file.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ..data import Example
from ..methods import AdapterLoadError, Method, create_method, get_method, read_adapter
from ..methods.base import ADAPTER_CONFIG, ADAPTER_WEIGHTS, nonfinite_tensors

ENTRY_FILE = "entry.json"
ADAPTER_DIR = "adapter"
KEY_FILE = "key.safetensors"
MAX_NAME_LEN = 100
NAME_CHARS = re.compile(r"[A-Za-z0-9._-]+")
FORMAT = 1
# device names Windows reserves in every folder, with any extension (con, nul.txt, COM1.json, ...)
RESERVED = re.compile(r"(con|prn|aux|nul|com[1-9]|lpt[1-9])(\..*)?", re.IGNORECASE)
STALE_PREFIXES = (".tmp-", ".trash-")  # left by writes that were killed half-way


class LibraryError(ValueError):
    """A library operation that cannot be done: unknown or existing entry, bad name, mismatch."""


def default_root() -> Path:
    """``$MMICT_VLIBRARY``, else ``~/.cache/mmict/vlibrary``."""
    env = os.environ.get("MMICT_VLIBRARY")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mmict" / "vlibrary"


def check_name(name: object) -> str:
    """Return ``name`` if it is a safe entry name, else raise LibraryError saying why."""
    if not isinstance(name, str):
        raise LibraryError(f"an entry name must be text, got {type(name).__name__}")
    rule = f"use 1-{MAX_NAME_LEN} of the characters A-Z a-z 0-9 . _ - , not starting with a dot"
    if not name:
        raise LibraryError(f"an entry name cannot be empty; {rule}")
    if "\x00" in name:
        raise LibraryError(f"an entry name cannot contain a NUL character; {rule}")
    if len(name) > MAX_NAME_LEN:
        raise LibraryError(f"entry name is {len(name)} characters long; {rule}")
    if name.startswith("."):
        raise LibraryError(f"entry name {name!r} starts with a dot (hidden/relative paths are not allowed); {rule}")
    if not NAME_CHARS.fullmatch(name):
        bad = sorted(set(c for c in name if not NAME_CHARS.fullmatch(c)))
        raise LibraryError(f"entry name {name!r} contains {bad} (no path separators or spaces); {rule}")
    if RESERVED.fullmatch(name):
        raise LibraryError(f"entry name {name!r} is a device name Windows reserves (con, prn, aux, nul, com1-9, "
                           f"lpt1-9, with any extension); choose another name")
    if name.endswith("."):
        raise LibraryError(f"entry name {name!r} ends with a dot, which Windows drops; {rule}")
    return name


@torch.no_grad()
def example_key(backbone, images: Sequence[np.ndarray], prompts: Sequence[str] | None = None) -> torch.Tensor:
    """Retrieval key of some examples: their LM-space image tokens, mean-pooled.  (d,) float32"""
    if len(images) == 0:
        raise LibraryError("a retrieval key needs at least one image")
    feats = backbone.encode_images(list(images), list(prompts) if prompts is not None else None)  # (N, n_tok, d)
    return feats.float().mean((0, 1)).cpu()


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _check_metrics(metrics: dict | None) -> dict:
    metrics = dict(metrics or {})
    for k, v in metrics.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise LibraryError(f"metrics must map names to finite numbers, got {k!r}: {v!r}")
    return metrics


class VLibrary:
    """An adapter library in folder ``root`` (created on first write)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.clean_stale()

    def clean_stale(self) -> list[str]:
        """Remove the hidden temp folders that killed writes left behind (on open); their names."""
        gone = []
        if self.root.is_dir():
            for p in self.root.iterdir():
                if p.name.startswith(STALE_PREFIXES):
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
                    gone.append(p.name)
        return gone

    def __repr__(self) -> str:
        return f"VLibrary({str(self.root)!r})"

    # -- paths --------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        """The folder of entry ``name`` (checked to be a direct child of the root)."""
        p = self.root / check_name(name)
        if p.resolve().parent != self.root.resolve():  # defence in depth; check_name already forbids this
            raise LibraryError(f"entry name {name!r} resolves outside the library root {self.root}")
        return p

    def _existing(self, name: str) -> Path:
        p = self.path(name)
        if not (p / ENTRY_FILE).is_file():
            known = ", ".join(e["name"] for e in self.list()) or "none"
            raise LibraryError(f"no entry {name!r} in the library at {self.root} (entries: {known})")
        return p

    # -- writing ------------------------------------------------------------------------------
    def add(self, name: str, method: Method, *, task: str, description: str = "", shots: int | None = None,
            samples: int | None = None, metrics: dict | None = None, key_examples: Sequence[Example] | None = None,
            overwrite: bool = False) -> dict:
        """Store ``method`` (its adapter, config and backbone fingerprint) as entry ``name``.

        ``key_examples``: a few training examples; their pooled image tokens become the entry's
        retrieval key for :meth:`search_by_example`.
        """
        bad = nonfinite_tensors(method.state_dict())
        if bad:
            raise LibraryError(f"the {method.name} adapter holds NaN or infinite values (in {bad[:3]}): its training "
                               f"diverged; retrain it with a lower learning rate")
        key = None
        if key_examples:
            images = [im for ex in key_examples for im in ex.images]
            prompts = [ex.prompt for ex in key_examples for _ in ex.images]
            key = example_key(method.backbone, images, prompts)
        meta = {"method": method.name, "backbone": method.backbone.fingerprint(), "config": method.config.to_dict(),
                "num_parameters": sum(int(v.numel()) for v in method.state_dict().values()),
                "shots": method.config.shots if shots is None else shots}
        return self._commit(name, lambda tmp: method.save(tmp / ADAPTER_DIR), meta, key, task=task,
                            description=description, samples=samples, metrics=metrics, overwrite=overwrite)

    def add_folder(self, name: str, adapter_dir: str | os.PathLike, *, task: str, description: str = "",
                   shots: int | None = None, samples: int | None = None, metrics: dict | None = None,
                   overwrite: bool = False) -> dict:
        """Store an adapter folder written by :meth:`Method.save` (no retrieval key)."""
        cfg, tensors = read_adapter(adapter_dir)
        get_method(cfg["method"])  # a method this installation knows

        def write(tmp: Path) -> None:
            (tmp / ADAPTER_DIR).mkdir()
            for f in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
                shutil.copyfile(Path(adapter_dir) / f, tmp / ADAPTER_DIR / f)

        meta = {"method": cfg["method"], "backbone": cfg["backbone"], "config": cfg["config"],
                "num_parameters": sum(int(v.numel()) for v in tensors.values()),
                "shots": cfg["config"].get("shots", 0) if shots is None else shots}
        return self._commit(name, write, meta, None, task=task, description=description, samples=samples,
                            metrics=metrics, overwrite=overwrite)

    def _commit(self, name: str, write: Callable[[Path], object], meta: dict, key: torch.Tensor | None, *,
                task: str, description: str, samples: int | None, metrics: dict | None, overwrite: bool) -> dict:
        final = self.path(name)
        if not isinstance(task, str) or not task:
            raise LibraryError("an entry needs a task name (task='...')")
        if not isinstance(description, str):
            raise LibraryError("description must be text")
        for field_name, v in (("shots", meta["shots"]), ("samples", samples)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise LibraryError(f"{field_name} must be a whole number >= 0, got {v!r}")
        if final.exists() and not overwrite:
            raise LibraryError(f"the library already has an entry {name!r}; remove it first or pass overwrite=True")
        twin = next((e for e in self._names() if e.lower() == name.lower() and e != name), None)
        if twin is not None:
            raise LibraryError(f"the library already has an entry {twin!r}, the same name as {name!r} ignoring case "
                               f"(one folder on Windows and macOS); choose another name")
        entry = {"format": FORMAT, "name": name, "task": task, "description": description, "samples": samples,
                 "metrics": _check_metrics(metrics), **meta, "has_key": key is not None,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))  # hidden: list() never shows it
        try:
            write(tmp)
            if key is not None:
                from safetensors.torch import save_file
                save_file({"key": key.contiguous()}, str(tmp / KEY_FILE))
            (tmp / ENTRY_FILE).write_text(json.dumps(entry, indent=2))  # written last: the entry is complete
            if final.exists():  # overwrite: move the old entry aside, put the new one in, drop the old
                trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=self.root))
                os.rename(final, trash / "old")
                os.rename(tmp, final)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename
        return entry

    def remove(self, name: str) -> None:
        """Delete entry ``name`` (renamed away first, so it disappears at once)."""
        p = self._existing(name)
        trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=self.root))
        os.rename(p, trash / "old")
        shutil.rmtree(trash, ignore_errors=True)

    # -- reading ------------------------------------------------------------------------------
    def list(self) -> list[dict]:
        """Every complete entry's metadata, sorted by name (hidden temp folders are skipped)."""
        out = []
        if not self.root.is_dir():
            return out
        for p in sorted(self.root.iterdir()):
            if p.name.startswith(".") or not p.is_dir() or not NAME_CHARS.fullmatch(p.name):
                continue
            try:
                out.append(json.loads((p / ENTRY_FILE).read_text()))
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                continue  # not an entry (or damaged): never listed
        return out

    def _names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if not p.name.startswith(".") and (p / ENTRY_FILE).is_file()]

    def show(self, name: str) -> dict:
        """An entry's metadata plus its folder and tensor shapes."""
        p = self._existing(name)
        entry = json.loads((p / ENTRY_FILE).read_text())
        cfg = json.loads((p / ADAPTER_DIR / ADAPTER_CONFIG).read_text())
        return {**entry, "path": str(p), "shapes": cfg.get("shapes", {})}

    def search_text(self, query: str, top_k: int = 10) -> list[tuple[str, float]]:
        """Entries ranked by TF-IDF cosine between ``query`` and name + description + task + method."""
        entries = self.list()
        docs = [Counter(_tokens(" ".join(str(e.get(k, "")) for k in ("name", "description", "task", "method"))))
                for e in entries]
        q = Counter(_tokens(query))
        if not docs or not q:
            return []
        n = len(docs)
        idf = {t: math.log((1 + n) / (1 + sum(t in d for d in docs))) + 1 for t in set(q) | {t for d in docs for t in d}}
        qv = {t: c * idf[t] for t, c in q.items()}
        qn = math.sqrt(sum(v * v for v in qv.values()))
        scored = []
        for e, d in zip(entries, docs):
            dv = {t: c * idf[t] for t, c in d.items()}
            dn = math.sqrt(sum(v * v for v in dv.values()))
            s = sum(qv[t] * dv.get(t, 0.0) for t in qv) / (qn * dn) if dn else 0.0
            if s > 0:
                scored.append((e["name"], s))
        return sorted(scored, key=lambda x: (-x[1], x[0]))[:top_k]

    def search_by_example(self, backbone, images: Sequence[np.ndarray], prompts: Sequence[str] | None = None,
                          top_k: int = 5) -> list[tuple[str, float]]:
        """Entries with a retrieval key from this backbone, ranked by cosine to the examples' key."""
        from safetensors.torch import load_file

        q = example_key(backbone, images, prompts)
        fp = backbone.fingerprint()
        scored = []
        for e in self.list():
            kf = self.root / e["name"] / KEY_FILE
            if not e.get("has_key") or e.get("backbone") != fp or not kf.is_file():
                continue
            k = load_file(str(kf))["key"].float()
            if k.shape != q.shape:
                continue
            scored.append((e["name"], float(torch.nn.functional.cosine_similarity(q, k, dim=0))))
        return sorted(scored, key=lambda x: (-x[1], x[0]))[:top_k]

    def load(self, name: str, backbone) -> Method:
        """The adapter of entry ``name`` on ``backbone`` (refused when trained on another backbone)."""
        p = self._existing(name)
        entry = json.loads((p / ENTRY_FILE).read_text())
        fp = backbone.fingerprint()
        if entry["backbone"] != fp:
            raise AdapterLoadError(
                f"library entry {name!r} was trained on another backbone (fingerprint {entry['backbone'][:12]}, "
                f"this one {fp[:12]}); load it onto the backbone it was trained on")
        return get_method(entry["method"]).load(p / ADAPTER_DIR, backbone)

    @contextlib.contextmanager
    def inject(self, name: str, backbone) -> Iterator[Method]:
        """``with lib.inject(name, bb) as m:`` == ``with lib.load(name, bb).attached() as m:``."""
        with self.load(name, backbone).attached() as m:
            yield m

    def compose(self, names: Sequence[str], weights: Sequence[float] | None, backbone) -> Method:
        """A new adapter of the entries' method whose every tensor is sum_i weights[i] * tensor_i
        (equal weights 1/n when None).  Refuses different methods, backbones or shapes.  The
        config is the first entry's.  Not stored: ``lib.add(...)`` it to keep it."""
        names = list(names)
        if not names:
            raise LibraryError("compose needs at least one entry name")
        weights = [1.0 / len(names)] * len(names) if weights is None else [float(w) for w in weights]
        if len(weights) != len(names) or not all(math.isfinite(w) for w in weights):
            raise LibraryError(f"compose needs one finite weight per entry: {len(names)} names, weights {weights}")
        fp = backbone.fingerprint()
        metas, states = [], []
        for n in names:
            p = self._existing(n)
            meta, tensors = read_adapter(p / ADAPTER_DIR)
            if meta["method"] != (metas[0]["method"] if metas else meta["method"]):
                raise LibraryError(f"cannot compose different methods: {names[0]!r} is {metas[0]['method']!r}, "
                                   f"{n!r} is {meta['method']!r}")
            if meta["backbone"] != fp:
                raise AdapterLoadError(f"cannot compose {n!r}: it was trained on another backbone "
                                       f"(fingerprint {meta['backbone'][:12]}, this one {fp[:12]})")
            if states and ({k: v.shape for k, v in tensors.items()} != {k: v.shape for k, v in states[0].items()}):
                raise LibraryError(f"cannot compose {names[0]!r} and {n!r}: their tensors have different names or shapes")
            metas.append(meta)
            states.append(tensors)
        cls = get_method(metas[0]["method"])
        method = create_method(cls.name, backbone, **metas[0]["config"])
        own = method.state_dict()
        if {k: v.shape for k, v in own.items()} != {k: v.shape for k, v in states[0].items()}:
            raise LibraryError(f"the entries' tensors do not fit a {cls.__name__} on this backbone")
        mixed = mix_tensors(states, weights)
        method.load_state_dict({k: v.to(own[k].dtype) for k, v in mixed.items()})
        return method


def mix_tensors(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """``{name: sum_i weights[i] * states[i][name]}`` (accumulated in float64, returned in the first
    state's dtype); weights None = 1/n each, used as given otherwise (not rescaled).  A non-float
    tensor (a step count, an index) is kept when every state has the same, else refused."""
    if not states:
        raise LibraryError("nothing to mix: no tensors given")
    weights = [1.0 / len(states)] * len(states) if weights is None else [float(w) for w in weights]
    if len(weights) != len(states):
        raise LibraryError(f"one weight per entry: {len(states)} entries, {len(weights)} weights")
    mixed = {}
    for k, ref in states[0].items():
        if ref.is_floating_point():
            acc = sum(w * s[k].double() for w, s in zip(weights, states))  # (same shape as ref)
            mixed[k] = acc.to(ref.dtype)
        elif all(torch.equal(s[k], ref) for s in states):
            mixed[k] = ref
        else:
            raise LibraryError(f"cannot compose the non-float tensor {k!r}: it differs between entries")
    return mixed
