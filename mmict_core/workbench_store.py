"""Server-side storage of browser sessions, so a user's work survives a page reload.

Each browser keeps a random id (the app stores it with ``gr.BrowserState``); the server keeps that
id's VLibrary (its adapters, with their metrics) under ``root/<id>/``.  Ids are 32 random url-safe
characters, so one session cannot name another's; folders unused for ``ttl_seconds`` are removed,
and a session may hold at most ``quota_bytes``.
"""
from __future__ import annotations

import re
import secrets
import shutil
import time
from pathlib import Path

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{32}")
DEFAULT_TTL = 7 * 24 * 3600  # a week without use
DEFAULT_QUOTA = 200 * 2**20  # bytes per session


class SessionStore:
    def __init__(self, root: str | Path, *, ttl_seconds: float = DEFAULT_TTL, quota_bytes: int = DEFAULT_QUOTA):
        if ttl_seconds <= 0 or quota_bytes <= 0:
            raise ValueError("ttl_seconds and quota_bytes must be positive")
        self.root = Path(root)
        self.ttl, self.quota = float(ttl_seconds), int(quota_bytes)

    def new_id(self) -> str:
        return secrets.token_urlsafe(24)  # 32 characters

    def valid(self, sid: object) -> bool:
        """True when ``sid`` is a well-formed id whose folder exists and has not expired."""
        return (isinstance(sid, str) and ID_PATTERN.fullmatch(sid) is not None and self.path(sid).is_dir()
                and time.time() - self._last_used(sid) < self.ttl)

    def path(self, sid: str) -> Path:
        if not (isinstance(sid, str) and ID_PATTERN.fullmatch(sid)):
            raise ValueError("not a session id")
        return self.root / sid

    def open(self, sid: object) -> str:
        """``sid`` if it names a live stored session, else a fresh id (its folder created); marks it used."""
        self.expire()
        if not self.valid(sid):
            sid = self.new_id()
        p = self.path(sid)
        p.mkdir(parents=True, exist_ok=True)
        (p / ".last-used").write_text(str(time.time()))
        return sid

    def library_root(self, sid: str) -> Path:
        return self.path(sid) / "vlibrary"

    def size(self, sid: str) -> int:
        return sum(f.stat().st_size for f in self.path(sid).rglob("*") if f.is_file())

    def check_quota(self, sid: str) -> None:
        used = self.size(sid)
        if used >= self.quota:
            raise ValueError(f"this session's storage is full ({used / 2**20:.1f} of {self.quota / 2**20:.0f} MB): "
                             f"delete adapters in the VLibrary tab or clear your session")

    def clear(self, sid: str) -> None:
        shutil.rmtree(self.path(sid), ignore_errors=True)

    def expire(self) -> list[str]:
        """Remove the sessions unused for longer than the expiry; their ids."""
        gone = []
        if self.root.is_dir():
            for p in self.root.iterdir():
                if ID_PATTERN.fullmatch(p.name) and p.is_dir() and time.time() - self._last_used(p.name) >= self.ttl:
                    shutil.rmtree(p, ignore_errors=True)
                    gone.append(p.name)
        return gone

    def _last_used(self, sid: str) -> float:
        try:
            return float((self.root / sid / ".last-used").read_text())
        except (OSError, ValueError):
            try:
                return (self.root / sid).stat().st_mtime
            except OSError:
                return 0.0
