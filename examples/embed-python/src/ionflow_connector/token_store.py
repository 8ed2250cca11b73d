"""The ``token-store`` capability: where the connector keeps its tokens.

:class:`FileTokenStore` reads and writes the same files as ionflow's file
store (``host/runtime/src/capabilities/token_store/file.rs``), so a token that
``ionflow run`` obtained is reused here and the other way round, and a token
request is made once across both:

* the folder is ``$IONFLOW_STATE_DIR/tokens``, else
  ``$XDG_STATE_HOME/ionflow/tokens``, else ``~/.local/state/ionflow/tokens``,
  mode 0700;
* one entry per key in ``<stem>.json``, where ``stem`` is the first 16 bytes of
  SHA-256 of the key in hex; the file holds ``{"key", "version", "value"}``,
  mode 0600, and is replaced atomically (temporary file, fsync, rename, fsync
  of the folder);
* ``save`` is a compare-and-swap under an exclusive ``flock`` on
  ``<stem>.write.lock``; versions grow with the clock (nanoseconds since the
  epoch, at least the expected version plus one) so that a version is never
  reused, not even after a delete;
* the lease that gives single flight is an exclusive ``flock`` on
  ``<stem>.lease.lock``, held until ``unlock`` or the end of the process
  (``ttl_ms`` is not needed: the OS releases the lock of a dead process).

``flock`` locks belong to an open file description, so two threads of this
process exclude each other just as two processes do.

Values are secrets (access and refresh tokens): nothing here logs them, and
neither :class:`Entry`'s ``repr`` nor any error message shows them.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import itertools
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Protocol, Tuple, Union

#: How often a waiter retries a held lease (as ionflow does).
LOCK_POLL_SECONDS = 0.02


@dataclass(frozen=True)
class Entry:
    """One stored value and its version (0 means "no entry")."""

    value: str = field(repr=False)
    version: int


class StoreConflict(Exception):
    """``save`` lost the compare-and-swap; ``current`` is what the store holds now."""

    def __init__(self, current: Optional[Entry]) -> None:
        super().__init__("the entry changed since the expected version")
        self.current = current


class StoreUnavailable(Exception):
    """The store could not be read or written; the message says why (never a value)."""


class LockTimeout(Exception):
    """``lock`` waited ``timeout_ms`` without getting the lease."""


class TokenStore(Protocol):
    """What the connector needs from a token store (the WIT ``token-store``).

    Implementations must make ``save`` atomic with respect to
    ``expected_version`` and ``lock`` exclusive across everyone sharing the store.
    """

    def load(self, key: str) -> Optional[Entry]: ...

    def save(self, key: str, expected_version: int, value: Optional[str]) -> int: ...

    def lock(self, key: str, ttl_ms: int, timeout_ms: int) -> int: ...

    def unlock(self, key: str, lease: int) -> None: ...


def default_state_dir() -> Path:
    """ionflow's state folder, resolved exactly as ``ionflow`` resolves it."""
    if "IONFLOW_STATE_DIR" in os.environ:
        return Path(os.environ["IONFLOW_STATE_DIR"])
    if "XDG_STATE_HOME" in os.environ:
        return Path(os.environ["XDG_STATE_HOME"]) / "ionflow"
    if "HOME" in os.environ:
        return Path(os.environ["HOME"]) / ".local" / "state" / "ionflow"
    raise StoreUnavailable("set IONFLOW_STATE_DIR (or HOME) to a folder for ionflow's state")


def _open_private(path: Path) -> int:
    """Opens (creating with mode 0600) a file for reading and writing."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileTokenStore:
    """Tokens in 0600 files under ionflow's state folder, shared with ``ionflow``.

    ``directory`` is the tokens folder itself; by default
    ``default_state_dir() / "tokens"``, the folder ``ionflow`` uses.
    """

    def __init__(self, directory: Union[str, os.PathLike, None] = None) -> None:
        path = Path(directory) if directory is not None else default_state_dir() / "tokens"
        try:
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o700)
        except OSError as e:
            raise StoreUnavailable(f"{path}: {e.strerror or e}") from None
        self.directory = path
        self._mutex = threading.Lock()
        self._leases: Dict[int, Tuple[str, int]] = {}
        self._next_lease = itertools.count(1)

    def __repr__(self) -> str:
        return f"FileTokenStore({str(self.directory)!r})"

    @staticmethod
    def stem(key: str) -> str:
        """The file name stem of ``key``: keys hold tenant and client ids, names a digest."""
        return hashlib.sha256(key.encode("utf-8")).digest()[:16].hex()

    def entry_path(self, key: str) -> Path:
        return self.directory / f"{self.stem(key)}.json"

    def _lock_path(self, key: str, kind: str) -> Path:
        return self.directory / f"{self.stem(key)}.{kind}.lock"

    # -- entries -----------------------------------------------------------

    def load(self, key: str) -> Optional[Entry]:
        path = self.entry_path(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            raise StoreUnavailable(f"{path}: {getattr(e, 'strerror', None) or type(e).__name__}") from None
        try:
            stored = json.loads(text)
            version, value = stored["version"], stored["value"]
            if not isinstance(version, int) or isinstance(version, bool) or not isinstance(value, str):
                raise ValueError("version must be a number and value a string")
        except (ValueError, KeyError, TypeError) as e:
            # The parser's message names a position, never the content.
            reason = f"{type(e).__name__} at {e.pos}" if isinstance(e, json.JSONDecodeError) else type(e).__name__
            raise StoreUnavailable(
                f"{path} is not a token-store entry ({reason}); delete it to start over"
            ) from None
        return Entry(value=value, version=version)

    def save(self, key: str, expected_version: int, value: Optional[str]) -> int:
        # A short exclusive section across threads and processes: read, compare, replace.
        lock_path = self._lock_path(key, "write")
        try:
            guard = _open_private(lock_path)
        except OSError as e:
            raise StoreUnavailable(f"{lock_path}: {e.strerror}") from None
        try:
            try:
                fcntl.flock(guard, fcntl.LOCK_EX)
            except OSError as e:
                raise StoreUnavailable(f"{lock_path}: {e.strerror}") from None
            current = self.load(key)
            if (current.version if current else 0) != expected_version:
                raise StoreConflict(current)
            path = self.entry_path(key)
            if value is None:
                try:
                    os.remove(path)
                    _sync_dir(self.directory)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    raise StoreUnavailable(f"{path}: {e.strerror}") from None
                return 0
            # Versions grow with the clock, so an entry that was deleted and
            # recreated never repeats a version a stale writer may still hold.
            version = max(time.time_ns(), expected_version + 1)
            data = json.dumps(
                {"key": key, "version": version, "value": value},
                separators=(",", ":"),
                ensure_ascii=False,
            ).encode("utf-8")
            self._write_atomically(path, data)
            return version
        finally:
            os.close(guard)  # releases the flock

    def _write_atomically(self, path: Path, data: bytes) -> None:
        """Temp file, fsync, rename, fsync the folder: never a torn entry."""
        tmp = path.with_suffix(f".tmp{os.getpid()}-{time.time_ns() % 1_000_000_000}")
        try:
            fd = _open_private(tmp)
            try:
                os.ftruncate(fd, 0)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            _sync_dir(self.directory)
        except OSError as e:
            try:
                os.remove(tmp)
            except OSError:
                pass
            raise StoreUnavailable(f"{path}: {e.strerror}") from None

    # -- leases ------------------------------------------------------------

    def lock(self, key: str, ttl_ms: int, timeout_ms: int) -> int:
        """Waits for the exclusive lease on ``key``; it ends with ``unlock`` or the process."""
        path = self._lock_path(key, "lease")
        deadline = time.monotonic() + timeout_ms / 1000
        try:
            fd = _open_private(path)
        except OSError as e:
            raise StoreUnavailable(f"{path}: {e.strerror}") from None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise StoreUnavailable(f"{path}: {e.strerror}") from None
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockTimeout() from None
                time.sleep(LOCK_POLL_SECONDS)
        with self._mutex:
            lease = next(self._next_lease)
            self._leases[lease] = (key, fd)
        return lease

    def unlock(self, key: str, lease: int) -> None:
        """Ends a lease; a lease id that is no longer held is ignored."""
        with self._mutex:
            held = self._leases.get(lease)
            if held is None or held[0] != key:
                return
            del self._leases[lease]
        os.close(held[1])  # closing the file releases the OS lock


class MemoryTokenStore:
    """Entries in a dict, shared by the instances of this process only.

    Leases are real (exclusive, ending after ``ttl_ms``), so one process's
    instances still make one token request; nothing survives the process.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._entries: Dict[str, Entry] = {}
        self._leases: Dict[str, Tuple[int, float]] = {}
        self._last_version = 0
        self._next_lease = itertools.count(1)

    def load(self, key: str) -> Optional[Entry]:
        with self._cond:
            return self._entries.get(key)

    def save(self, key: str, expected_version: int, value: Optional[str]) -> int:
        with self._cond:
            current = self._entries.get(key)
            if (current.version if current else 0) != expected_version:
                raise StoreConflict(current)
            if value is None:
                self._entries.pop(key, None)
                return 0
            self._last_version += 1
            self._entries[key] = Entry(value=value, version=self._last_version)
            return self._last_version

    def lock(self, key: str, ttl_ms: int, timeout_ms: int) -> int:
        deadline = time.monotonic() + timeout_ms / 1000
        with self._cond:
            while True:
                now = time.monotonic()
                held = self._leases.get(key)
                if held is None or held[1] <= now:
                    lease = next(self._next_lease)
                    self._leases[key] = (lease, now + ttl_ms / 1000)
                    return lease
                if now >= deadline:
                    raise LockTimeout()
                self._cond.wait(min(deadline, held[1]) - now)

    def unlock(self, key: str, lease: int) -> None:
        with self._cond:
            held = self._leases.get(key)
            if held is not None and held[0] == lease:
                del self._leases[key]
                self._cond.notify_all()
