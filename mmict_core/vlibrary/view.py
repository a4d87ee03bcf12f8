"""A user's own VLibrary seen together with shared, read-only libraries (the starter library).

Front ends (the app's VLibrary tab, Compare, the widget Studio) read one list: the user's entries
first, then every shared entry trained on this backbone, each marked by its ``source``.  Writes go
to the user's library only; a shared entry can be loaded or composed, never overwritten or removed.
"""
from __future__ import annotations

from typing import Sequence

from .library import LibraryError, VLibrary

OWN = "yours"
SHARED = "starter (read-only)"


class LibraryView:
    """``own`` (may be None: nothing can be stored) + ``shared`` libraries, filtered to ``fingerprint``."""

    def __init__(self, own: VLibrary | None, shared: Sequence[VLibrary] = (), fingerprint: str | None = None):
        self.own, self.shared, self.fingerprint = own, list(shared), fingerprint

    @property
    def writable(self) -> bool:
        return self.own is not None

    @property
    def root(self):
        return self.own.root if self.own is not None else None

    def _shared_entries(self) -> list[tuple[VLibrary, dict]]:
        out = []
        for lib in self.shared:
            for e in lib.list():
                if self.fingerprint is None or e.get("backbone") == self.fingerprint:
                    out.append((lib, e))
        return out

    def shared_names(self) -> set[str]:
        return {e["name"] for _, e in self._shared_entries()}

    def owner(self, name: str) -> VLibrary:
        """The library that holds ``name`` (the user's first)."""
        if self.own is not None and name in {e["name"] for e in self.own.list()}:
            return self.own
        for lib, e in self._shared_entries():
            if e["name"] == name:
                return lib
        known = ", ".join(e["name"] for e in self.list()) or "none"
        raise LibraryError(f"no entry {name!r} in your library or the starter library (entries: {known})")

    # -- reading ------------------------------------------------------------------------------
    def list(self, source: str | None = None) -> list[dict]:
        """Every entry with its ``source`` (``"yours"`` or ``"starter (read-only)"``); own first."""
        own = [{**e, "source": OWN} for e in (self.own.list() if self.own is not None else [])]
        taken = {e["name"] for e in own}
        shared = [{**e, "source": SHARED} for _, e in self._shared_entries() if e["name"] not in taken]
        rows = own + shared
        return [r for r in rows if source is None or r["source"] == source]

    def show(self, name: str) -> dict:
        lib = self.owner(name)
        return {**lib.show(name), "source": OWN if lib is self.own else SHARED}

    def search_text(self, query: str, top_k: int = 10) -> list[tuple[str, float]]:
        hits = (self.own.search_text(query, top_k) if self.own is not None else [])
        names = {n for n, _ in hits}
        for lib in self.shared:
            allowed = self.shared_names()
            hits += [(n, s) for n, s in lib.search_text(query, top_k) if n in allowed and n not in names]
        return sorted(hits, key=lambda x: (-x[1], x[0]))[:top_k]

    def load(self, name: str, backbone):
        return self.owner(name).load(name, backbone)

    def compose(self, names: Sequence[str], weights, backbone):
        libs = {id(self.owner(n)): self.owner(n) for n in names}
        if len(libs) > 1:
            raise LibraryError("compose entries of one library at a time: your own adapters, or the starter "
                               "library's (load a starter entry into Compare to use it beside your own)")
        return next(iter(libs.values())).compose(names, weights, backbone)

    # -- writing (the user's library only) ----------------------------------------------------
    def _writable(self, name: str, verb: str) -> VLibrary:
        if self.own is None:
            raise LibraryError(f"this session has no library of its own to {verb} {name!r} in")
        if name in self.shared_names() and name not in {e["name"] for e in self.own.list()}:
            raise LibraryError(f"{name!r} belongs to the starter library shipped with the teaching VLM, which is "
                               f"read-only; {'choose another name' if verb == 'store' else 'your own entries can be removed'}")
        return self.own

    def add(self, name: str, method, **kw) -> dict:
        return self._writable(name, "store").add(name, method, **kw)

    def remove(self, name: str) -> None:
        self._writable(name, "remove").remove(name)
