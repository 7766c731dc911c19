"""`AuditLog`: one JSON object per line for every denial, shadow denial and store error.

Allowed decisions are never written. Each line has the fields::

    time         the event's time, ISO 8601 in UTC with microseconds
    limiter      the limiter's name
    key          the user key, or key_digest (hash_keys=True) in its place
    result       "denied", "shadow_denied", or, for a store error, the error word
                 (e.g. "StoreUnavailable")
    limit        the binding limit's units per period (null when there was no decision)
    remaining    units left (null when there was no decision)
    retry_after  seconds until a request of this cost could pass (null when it never can, or
                 when there was no decision)

``hash_keys=True`` writes ``key_digest``, the hex HMAC-SHA256 of the key, instead of the key: the
same key always gives the same digest, so a log still shows which requester was denied how often
without storing who it was. The HMAC secret is random per process unless ``secret`` is given:
pass the same secret to every process (and keep it out of the log's readers' hands) to compare
digests across processes and restarts, or to look a known key's digest up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import threading
import weakref
from datetime import UTC, datetime
from typing import IO, Any, Final

from ratekeeper.events import Event

__all__ = ["AuditLog"]

SECRET_BYTES: Final = 32
_PROCESS_SECRET: Final = secrets.token_bytes(SECRET_BYTES)

Sink = str | os.PathLike[str] | IO[str] | logging.Logger


class AuditLog:
    """Writes the audit lines of every event to ``sink``: a path (the file is opened for
    appending, each line written by one ``write`` under a lock, so threads and processes never
    interleave lines), a text file object (written and flushed under a lock), or a
    `logging.Logger` (one record per line, at ``level``)."""

    def __init__(
        self,
        sink: Sink,
        *,
        hash_keys: bool = False,
        secret: bytes | str | None = None,
        level: int = logging.INFO,
    ) -> None:
        self.hash_keys = hash_keys
        if isinstance(secret, str):
            secret = secret.encode()
        self._secret = _PROCESS_SECRET if secret is None else secret
        self._lock = threading.Lock()
        self._logger: logging.Logger | None = None
        self._stream: IO[str] | None = None
        self._file: IO[bytes] | None = None
        self._level = level
        if isinstance(sink, logging.Logger):
            self._logger = sink
        elif isinstance(sink, str | os.PathLike):
            # Unbuffered, O_APPEND: each line is one write(2) at the end of the file.
            self._file = open(sink, "ab", buffering=0)  # noqa: SIM115 - kept open; see close()
            self._close_file = weakref.finalize(self, self._file.close)
        else:
            self._stream = sink

    def close(self) -> None:
        """Close the file this log opened (a file object or logger given to it stays open)."""
        if self._file is not None:
            self._close_file()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def digest(self, key: str) -> str:
        """The ``key_digest`` this log writes for ``key``."""
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    def record(self, event: Event) -> dict[str, Any] | None:
        """The JSON object this log writes for ``event`` (None: nothing to write)."""
        if event.kind != "hit":
            return None
        if event.result == "error":
            result = event.error or "error"
        elif event.result == "shadow_denied" or (event.result == "allowed" and event.shadow_denied):
            result = "shadow_denied"
        elif event.result == "denied":
            result = "denied"
        else:
            return None
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(event.time, UTC).isoformat(timespec="microseconds"),
            "limiter": event.limiter,
        }
        if self.hash_keys:
            entry["key_digest"] = self.digest(str(event.key))
        else:
            entry["key"] = str(event.key)
        entry["result"] = result
        decision = event.decision
        if decision is None:
            entry.update(limit=None, remaining=None, retry_after=None)
        else:
            retry = decision.retry_after
            entry.update(
                limit=decision.limit,
                remaining=decision.remaining,
                retry_after=retry if math.isfinite(retry) else None,
            )
        return entry

    def observe(self, event: Event) -> None:
        entry = self.record(event)
        if entry is None:
            return
        line = json.dumps(entry, ensure_ascii=False, allow_nan=False)
        if self._logger is not None:
            self._logger.log(self._level, line)
        elif self._file is not None:
            data = (line + "\n").encode()
            with self._lock:
                if not self._file.closed:
                    self._file.write(data)
        elif self._stream is not None:
            with self._lock:
                self._stream.write(line + "\n")
                self._stream.flush()
