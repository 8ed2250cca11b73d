"""Who holds a grant: this process's part in ionflow's record of the
processes that use one token-store key, so that only the last one revokes.

The rule is ionflow's (``host/src/grants.rs``, ``host/src/store/holders.rs``):
every process using a grant holds it from the moment a connection opens
until it is done, and a grant is revoked only by its last holder. On the
file store the holders of a key are the shared ``flock`` locks on
``TOKENS/<stem>.holders.lock`` beside its entry (``stem`` as in
:class:`~ionflow_connector.token_store.FileTokenStore`, mode 0600):

* to join, a process takes a shared lock on it, retrying for a bounded
  time (:func:`join_wait`) while someone holds it exclusively, which only
  a last holder ending the grant does;
* to leave, it closes its lock; when it was asked to end the grant it then
  tries, without waiting, to lock the file exclusively on a new open file:
  if that succeeds no one else holds the grant, so it ends it while
  newcomers wait, and closes the file after; if not, another process holds
  it and ends it later.

The kernel drops the locks of a process that ends in any way (even
``kill -9``), so a dead holder is never counted.

Within this process, the connections on one key are users of one hold (as
ionflow's ``Grants`` counts them): the first joins with one open file, the
last leaves, and the grant is ended only when every user asked for it. With
any other store (:class:`~ionflow_connector.token_store.MemoryTokenStore`, a
store of your own) the users of this process are counted the same way but
nothing is locked: this process is taken to be the only one.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from enum import Enum
from pathlib import Path
from typing import Callable, Dict, Hashable, Optional, Tuple

from .errors import GrantHoldersError
from .token_store import FileTokenStore, TokenStore

#: How often a process waiting to hold a grant asks again while the last
#: holder is ending it (as ionflow does).
JOIN_POLL_SECONDS = 0.02


def join_wait(timeout_secs: Optional[float]) -> float:
    """Seconds a newcomer waits while the last holder ends the grant, as ionflow's
    ``join_wait``: the revocation may wait for the token lease and then for the
    endpoint, each bounded by the request timeout (60 s by default)."""
    return 3 * (60 if timeout_secs is None else timeout_secs) + 30


class Released(Enum):
    """What became of a grant when one of its users in this process let go."""

    #: Another user in this process still holds it.
    STILL_USED = "still-used"
    #: Left in the store for the next process, as asked.
    KEPT = "kept"
    #: Another live process holds it: ending it is left to that one.
    OTHERS_HOLD = "others-hold"
    #: Revoked at the revocation endpoint; the stored tokens are gone.
    REVOKED = "revoked"
    #: The revocation failed; the stored tokens were deleted anyway.
    DROPPED = "dropped"


class _Key:
    """This process's hold on one grant, shared by its users."""

    def __init__(self, store: TokenStore, path: Optional[Path]) -> None:
        # Serialises joining and leaving (and ending) this grant in this process.
        self.lock = threading.Lock()
        # Kept so that id(store), part of a local key's identity, is not reused.
        self.store = store
        # The lock file; None for a store no other process shares.
        self.path = path
        self.fd: Optional[int] = None
        self.users = 0
        # Whether every user so far asked for the grant to end with it.
        self.revoke = True
        # Threads about to use this entry: it is dropped only when none is.
        self.interest = 0


_registry: Dict[Hashable, _Key] = {}
_registry_lock = threading.Lock()


def _forget_after_fork() -> None:
    """A forked child does not hold its parent's grants: it closes its copies of
    the lock files (the parent's locks stay, they belong to the parent's open
    files too), so that the parent can still find out that it is the last holder."""
    global _registry, _registry_lock
    held, _registry, _registry_lock = _registry, {}, threading.Lock()
    for entry in held.values():
        if entry.fd is not None:
            try:
                os.close(entry.fd)
            except OSError:
                pass
            entry.fd = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def lock_path(store: FileTokenStore, key: str) -> Path:
    """The holders' lock file of ``key``: ``<stem>.holders.lock`` beside its entry."""
    return store.directory / f"{store.stem(key)}.holders.lock"


def _identity(store: TokenStore, key: str) -> Tuple[Hashable, Optional[Path]]:
    if isinstance(store, FileTokenStore):
        # Two store objects (or paths) on one folder share the holds of this process.
        try:
            folder = os.stat(store.directory)
        except OSError as e:
            raise GrantHoldersError(f"{store.directory}: {e.strerror}", str(store.directory)) from None
        return ("file", folder.st_dev, folder.st_ino, key), lock_path(store, key)
    return ("local", id(store), key), None


def _enter(identity: Hashable, store: TokenStore, path: Optional[Path]) -> _Key:
    with _registry_lock:
        entry = _registry.get(identity)
        if entry is None:
            entry = _registry[identity] = _Key(store, path)
        entry.interest += 1
        return entry


def _exit(identity: Hashable, entry: _Key) -> None:
    with _registry_lock:
        entry.interest -= 1
        if entry.interest == 0 and entry.users == 0 and _registry.get(identity) is entry:
            del _registry[identity]


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise GrantHoldersError(f"{path}: {e.strerror}", str(path)) from None


def _busy(path: Path, wait: float) -> GrantHoldersError:
    return GrantHoldersError(
        f"{path}: another process has been ending this grant for {wait:.0f} s; "
        "open the connection again once it is done",
        str(path),
    )


def _join(path: Path, deadline: float, wait: float) -> int:
    """A shared lock on ``path``, waiting until ``deadline`` while it is held exclusively."""
    fd = _open(path)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return fd
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise GrantHoldersError(f"{path}: {e.strerror}", str(path)) from None
        if time.monotonic() >= deadline:
            os.close(fd)
            raise _busy(path, wait)
        time.sleep(JOIN_POLL_SECONDS)


def _leave(path: Path, fd: Optional[int], end: Optional[Callable[[], Released]]) -> Released:
    """Lets go of this process's lock; with ``end``, runs it if no one else holds."""
    if fd is not None:
        os.close(fd)  # releases the shared lock
    if end is None:
        return Released.KEPT
    probe = _open(path)
    try:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                # Another holder, or another last holder already ending it.
                return Released.OTHERS_HOLD
            raise GrantHoldersError(f"{path}: {e.strerror}", str(path)) from None
        # Newcomers wait on their shared lock until `probe` closes.
        return end()
    finally:
        os.close(probe)


class GrantHold:
    """One user's hold on a grant (one :class:`~ionflow_connector.Connection`)."""

    def __init__(self, identity: Hashable, entry: _Key) -> None:
        self._identity = identity
        self._entry = entry
        self._pid = os.getpid()
        self._released = False

    @property
    def path(self) -> Optional[Path]:
        """The holders' lock file, or None when no other process shares the store."""
        return self._entry.path

    def release(self, revoke: bool, end: Callable[[], Released]) -> Released:
        """This user is done. ``revoke`` is its wish for the end; when it is the
        last user in this process, every user wished it and no other process holds
        the grant, ``end`` runs (revoke, then delete the stored tokens) while
        newcomers wait, and its outcome is returned.

        Raises :class:`GrantHoldersError` when whether others hold could not be
        found out; this process no longer holds the grant then either."""
        if self._released:
            return Released.KEPT
        self._released = True
        if os.getpid() != self._pid:
            # A copy of a connection in a forked child: the child never held it.
            return Released.KEPT
        entry = self._entry
        with _registry_lock:
            entry.interest += 1
        try:
            with entry.lock:
                entry.revoke = entry.revoke and revoke
                if entry.users > 1:
                    entry.users -= 1
                    return Released.STILL_USED
                if entry.users == 0:
                    return Released.KEPT
                entry.users = 0
                wanted = entry.revoke
                fd, entry.fd = entry.fd, None
                if entry.path is None:
                    return end() if wanted else Released.KEPT
                return _leave(entry.path, fd, end if wanted else None)
        finally:
            _exit(self._identity, entry)


def hold(store: TokenStore, key: str, wait: float) -> GrantHold:
    """Holds the grant ``key`` of ``store`` for one more user in this process;
    the first one joins its holders, waiting up to ``wait`` seconds while a last
    holder elsewhere (or in this process) is ending the grant, so that a newcomer
    never picks up a token that is being revoked.

    Raises :class:`GrantHoldersError`, naming the lock file, when it cannot."""
    identity, path = _identity(store, key)
    deadline = time.monotonic() + wait
    entry = _enter(identity, store, path)
    try:
        if not entry.lock.acquire(timeout=min(max(wait, 0.0), threading.TIMEOUT_MAX)):
            # Another connection of this process is ending the grant.
            if path is not None:
                raise _busy(path, wait)
            raise GrantHoldersError(
                f"another connection of this process has been ending this grant in its "
                f"{type(store).__name__} for {wait:.0f} s; open the connection again once it is done",
                None,
            )
        try:
            if entry.users == 0:
                if path is not None:
                    entry.fd = _join(path, deadline, wait)
                entry.revoke = True
            entry.users += 1
        finally:
            entry.lock.release()
    finally:
        _exit(identity, entry)
    return GrantHold(identity, entry)
