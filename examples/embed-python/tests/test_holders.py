"""Who revokes a grant: only its last holder, Python and ionflow processes alike.

Every test here runs real processes on one token folder (Python children,
`ionflow run`, `ionflow serve`) against `ionflow sim`, and reads what reached
the gateway from the simulator's counters.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable, List, Optional

import pytest

from conftest import Sim, assert_no_secret, ionflow, ionflow_bin, items_pipeline
from ionflow_connector import (
    Connection,
    FileTokenStore,
    GrantHoldersError,
    InvalidOptionsError,
    MemoryTokenStore,
    TokenStoreError,
    inspect,
)

USERS_ME = "ifsservice/usermgt/v2/users/me"


def store_key(sim: Sim) -> str:
    info = inspect(sim.ionapi).info
    assert info is not None
    return info.store_key


def entry_of(state_dir: Path, key: str) -> Path:
    return FileTokenStore(state_dir / "tokens").entry_path(key)


def lock_of(state_dir: Path, key: str) -> Path:
    """The holders' lock file, named as ionflow names it (host/src/store/holders.rs)."""
    return state_dir / "tokens" / f"{FileTokenStore.stem(key)}.holders.lock"


def _try_flock(path: Path, operation: int) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _flocks(path: Path) -> List[str]:
    """The kinds (``READ``, ``WRITE``) of the flock locks held on ``path``,
    read from /proc/locks without taking one. A probe that locked the file
    would itself be a holder for a process deciding at that moment whether
    it is the last: the test would then change what it observes (a holder
    seeing the probe's shared lock keeps the grant instead of ending it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return []
    file_id = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    kinds = []
    # "1: FLOCK  ADVISORY  WRITE 6728 fe:00:10010697 0 EOF"; a waiter's line has "->".
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == file_id:
            kinds.append(fields[3])
    return kinds


def someone_holds(path: Path) -> bool:
    """True while a process holds the grant, or a last holder ends it."""
    return bool(_flocks(path))


def someone_ends(path: Path) -> bool:
    """True while a last holder is ending the grant (its exclusive lock)."""
    return "WRITE" in _flocks(path)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for: {what}"
        time.sleep(0.01)


def unlimited_items_pipeline(directory: Path, ionapi: Path, *, schedule: Optional[str] = None, revoke_on_exit: bool = False) -> Path:
    """The items pipeline with the client-side rate limit lifted."""
    return items_pipeline(
        directory,
        ionapi,
        schedule=schedule,
        connection_lines="rate_limit = { requests = 1000000, window_secs = 1 }\n"
        + ("revoke_on_exit = true" if revoke_on_exit else ""),
    )


HOLDER = textwrap.dedent(
    """
    import logging, sys
    from ionflow_connector import Connection
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    conn = Connection.from_ionapi(sys.argv[1], revoke_on_close=True)
    print(conn.get(sys.argv[2]).status, flush=True)
    for line in sys.stdin:
        if line.strip() == "call":
            print(conn.get(sys.argv[2]).status, flush=True)
        elif line.strip() == "close":
            conn.close()
            print("closed", flush=True)
            break
    """
)


class Holder:
    """Another Python process holding the grant through a Connection that
    revokes on close; it obeys "call" and "close" on its stdin."""

    def __init__(self, sim: Sim) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(sim.ionapi), USERS_ME],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        assert self.answer() == "200", "it called the gateway"

    def answer(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line:
            _, err = self.process.communicate(timeout=30)
            raise AssertionError(f"the holder ended: {err}")
        return line

    def tell(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def ask(self, command: str) -> str:
        self.tell(command)
        return self.answer()

    def finish(self) -> str:
        """Waits for the exit; returns its log (stderr)."""
        _, err = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, err
        return err

    def kill(self) -> None:
        self.process.kill()  # SIGKILL: no goodbye
        self.process.communicate(timeout=30)


def test_the_lock_file_is_ionflows_and_held_while_the_connection_is_open(sim: Sim, state_dir: Path) -> None:
    key = store_key(sim)
    lock = lock_of(state_dir, key)
    conn = Connection.from_ionapi(sim.ionapi)
    assert lock.is_file()
    assert oct(lock.stat().st_mode & 0o777) == oct(0o600)
    # Another open file (as another process would) cannot take it exclusively...
    assert not _try_flock(lock, fcntl.LOCK_EX)
    # ...but can share it: holding does not keep others out.
    assert _try_flock(lock, fcntl.LOCK_SH)
    conn.close()
    assert _try_flock(lock, fcntl.LOCK_EX), "closing let go of the grant"


def test_python_keeps_the_grant_while_ionflow_serve_holds_it(
    sim: Sim, tmp_path: Path, state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    key = store_key(sim)
    lock, entry = lock_of(state_dir, key), entry_of(state_dir, key)
    pipelines = tmp_path / "pipelines"
    unlimited_items_pipeline(pipelines, sim.ionapi, schedule="* * * * * *")
    serve_log = tmp_path / "serve.log"

    def runs_finished() -> int:
        return sum(1 for line in serve_log.read_text().splitlines() if '"run_finished"' in line)

    with serve_log.open("w") as log_file:
        serve = subprocess.Popen(
            [ionflow_bin(), "serve", str(pipelines), "--log-format", "json"],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env=dict(os.environ),
        )
    try:
        wait_until(lambda: someone_holds(lock), "ionflow serve holds the grant")
        wait_until(lambda: runs_finished() >= 1, "a first run")
        with Connection.from_ionapi(sim.ionapi, revoke_on_close=True) as conn:
            assert conn.token_info().cached, "serve's token"
            assert conn.get(USERS_ME).status == 200
        counters = sim.counters()
        assert counters["revocations"] == 0, "serve holds the grant: Python does not revoke it"
        assert entry.is_file(), "the grant stays in the store"
        assert "another live process holds the grant" in caplog.text

        # serve goes on with the same grant, and so does the CLI.
        done = runs_finished()
        wait_until(lambda: runs_finished() >= done + 2, "two more runs")
        ionflow("whoami", str(sim.ionapi))
        counters = sim.counters()
        assert counters["token_requests"]["password"] == 1, counters
        assert counters["unauthorized"] == 0, "no call met a revoked token"
        assert counters["revocations"] == 0
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    assert serve.returncode == 0, serve_log.read_text()
    # At shutdown serve is the last holder, and revokes.
    assert sim.counters()["revocations"] == 1
    assert not entry.exists()
    assert_no_secret([caplog.text, serve_log.read_text()], sim.secrets())


def test_an_ionflow_run_does_not_revoke_under_python_and_python_revokes_last(
    sim: Sim, tmp_path: Path, state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    key = store_key(sim)
    entry = entry_of(state_dir, key)
    pipeline = unlimited_items_pipeline(tmp_path / "run", sim.ionapi, revoke_on_exit=True)
    with Connection.from_ionapi(sim.ionapi, revoke_on_close=True) as conn:
        assert conn.get(USERS_ME).status == 200
        run = ionflow("run", str(pipeline), "-v")
        assert len((tmp_path / "run" / "out.jsonl").read_text().splitlines()) == 300
        assert sim.counters()["revocations"] == 0, f"Python holds the grant: {run.stderr}"
        assert "another live process holds the grant" in run.stderr, run.stderr
        assert entry.is_file()
        assert conn.get(USERS_ME).status == 200
        counters = sim.counters()
        assert counters["token_requests"]["password"] == 1, "the run used Python's token"
        assert counters["unauthorized"] == 0
    counters = sim.counters()
    assert counters["revocations"] == 1, "Python was the last holder"
    assert not entry.exists(), "and deleted the stored tokens"
    assert "last holder: revoked" in caplog.text
    assert_no_secret([caplog.text, run.stdout, run.stderr], sim.secrets())


def test_python_waits_while_ionflow_ends_the_grant(sim: Sim, tmp_path: Path, state_dir: Path) -> None:
    key = store_key(sim)
    lock, entry = lock_of(state_dir, key), entry_of(state_dir, key)
    pipeline = unlimited_items_pipeline(tmp_path / "run", sim.ionapi, revoke_on_exit=True)
    # The revocation is done at once and answered 3 s later: the run, the
    # last holder, stays that long in its exclusive section.
    sim.post("faults", {"endpoint": "revocation", "count": 1, "delay_ms": 3000})
    run = subprocess.Popen(
        [ionflow_bin(), "run", str(pipeline), "--quiet"], stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    try:
        wait_until(lambda: someone_ends(lock), "the run ends the grant")
        with Connection.from_ionapi(sim.ionapi) as conn:
            # Joined only once the run was done: the revoked token is gone.
            assert sim.counters()["revocations"] == 1
            assert not entry.exists(), "a newcomer never sees a token being revoked"
            assert conn.get(USERS_ME).status == 200
    finally:
        _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    counters = sim.counters()
    assert counters["token_requests"]["password"] == 2, "Python started a new grant"
    assert counters["unauthorized"] == 0, "no call met the revoked token"


def test_a_join_that_cannot_wait_longer_is_a_typed_error_naming_the_file(sim: Sim, state_dir: Path) -> None:
    key = store_key(sim)
    lock = lock_of(state_dir, key)
    lock.parent.mkdir(parents=True, exist_ok=True)
    # An exclusive lock is what a last holder ending the grant keeps.
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(GrantHoldersError) as refused:
            Connection.from_ionapi(sim.ionapi, grant_wait=0.3)
        assert isinstance(refused.value, TokenStoreError)
        assert refused.value.path == str(lock)
        assert str(lock) in str(refused.value) and "ending this grant" in str(refused.value)
    finally:
        os.close(fd)
    with Connection.from_ionapi(sim.ionapi, grant_wait=0.3) as conn:
        assert conn.get(USERS_ME).status == 200
    for hostile in (float("nan"), -1.0, float("inf")):
        with pytest.raises(InvalidOptionsError, match="grant_wait"):
            Connection.from_ionapi(sim.ionapi, grant_wait=hostile)


def test_two_python_processes_the_last_to_close_revokes_once(sim: Sim, state_dir: Path) -> None:
    entry = entry_of(state_dir, store_key(sim))
    first, second = Holder(sim), Holder(sim)
    assert first.ask("close") == "closed"
    first_log = first.finish()
    assert sim.counters()["revocations"] == 0, first_log
    assert "another live process holds the grant" in first_log
    assert entry.is_file()
    assert second.ask("call") == "200", "the grant still works for the other one"
    assert second.ask("close") == "closed"
    second_log = second.finish()
    counters = sim.counters()
    assert counters["revocations"] == 1, second_log
    assert "last holder: revoked" in second_log
    assert not entry.exists()
    assert counters["token_requests"]["password"] == 1
    assert counters["unauthorized"] == 0
    assert_no_secret([first_log, second_log], sim.secrets())


def test_python_processes_closing_together_revoke_once_and_only_last(sim: Sim, state_dir: Path) -> None:
    entry = entry_of(state_dir, store_key(sim))
    staying = Holder(sim)
    leaving = [Holder(sim) for _ in range(3)]
    for holder in leaving:
        holder.tell("close")
    logs = [holder.finish() for holder in leaving]
    assert sim.counters()["revocations"] == 0, f"one process still holds the grant: {logs}"
    assert entry.is_file()
    # Now every holder closes at once: whoever is last revokes, once.
    last = [staying] + [Holder(sim) for _ in range(3)]
    for holder in last:
        holder.tell("close")
    logs += [holder.finish() for holder in last]
    counters = sim.counters()
    assert counters["revocations"] == 1, logs
    assert counters["token_requests"]["password"] == 1
    assert counters["unauthorized"] == 0
    assert not entry.exists()
    assert_no_secret(logs, sim.secrets())


def test_a_killed_python_holder_does_not_count(sim: Sim, tmp_path: Path, state_dir: Path) -> None:
    entry = entry_of(state_dir, store_key(sim))
    holder = Holder(sim)
    with Connection.from_ionapi(sim.ionapi, revoke_on_close=True) as conn:
        assert conn.get(USERS_ME).status == 200
    assert sim.counters()["revocations"] == 0, "the other process held it"
    holder.kill()
    # ionflow finds itself the last holder: the dead process's lock went with it.
    pipeline = unlimited_items_pipeline(tmp_path / "run", sim.ionapi, revoke_on_exit=True)
    run = ionflow("run", str(pipeline), "--quiet")
    counters = sim.counters()
    assert counters["revocations"] == 1, run.stderr
    assert counters["token_requests"]["password"] == 1
    assert not entry.exists()


def test_a_python_holder_killed_while_ending_the_grant_blocks_no_one(sim: Sim, state_dir: Path) -> None:
    lock = lock_of(state_dir, store_key(sim))
    # Its revocation is answered only after a minute: it is killed meanwhile.
    sim.post("faults", {"endpoint": "revocation", "count": 1, "delay_ms": 60_000})
    holder = Holder(sim)
    holder.tell("close")
    wait_until(lambda: someone_ends(lock), "the holder ends the grant")
    holder.kill()
    # Without the kernel dropping the dead process's lock, this would wait
    # (and give up after 10 s with GrantHoldersError).
    with Connection.from_ionapi(sim.ionapi, grant_wait=10):
        pass
    assert not someone_holds(lock)


def test_the_connections_of_one_process_share_one_hold(sim: Sim, state_dir: Path) -> None:
    key = store_key(sim)
    lock, entry = lock_of(state_dir, key), entry_of(state_dir, key)

    def open_lock_files() -> List[str]:
        fds = Path("/proc/self/fd")
        return [n for n in os.listdir(fds) if os.path.realpath(fds / n) == str(lock.resolve())]

    first = Connection.from_ionapi(sim.ionapi, revoke_on_close=True)
    # Another store object on the same folder is the same grant.
    second = Connection.from_ionapi(sim.ionapi, revoke_on_close=True, token_store=FileTokenStore(state_dir / "tokens"))
    assert len(open_lock_files()) == 1, "one open file, one lock, per process and grant"
    assert first.get(USERS_ME).status == 200
    first.close()
    assert sim.counters()["revocations"] == 0, "the other connection still uses it"
    assert second.get(USERS_ME).status == 200
    second.close()
    assert sim.counters()["revocations"] == 1
    assert not entry.exists()
    assert open_lock_files() == []

    # The grant ends only when every connection on it asked for it.
    keeping = Connection.from_ionapi(sim.ionapi, revoke_on_close=False)
    revoking = Connection.from_ionapi(sim.ionapi, revoke_on_close=True)
    assert revoking.get(USERS_ME).status == 200
    revoking.close()
    keeping.close()
    assert sim.counters()["revocations"] == 1, "one of them wished to keep it"
    assert entry.is_file()


def test_a_forked_child_does_not_hold_its_parents_grant(sim: Sim, state_dir: Path) -> None:
    entry = entry_of(state_dir, store_key(sim))
    conn = Connection.from_ionapi(sim.ionapi, revoke_on_close=True)
    assert conn.get(USERS_ME).status == 200
    wait, release = os.pipe()
    started, ready = os.pipe()
    child = os.fork()
    if child == 0:  # the child only waits: its copy of the lock file was closed at the fork
        os.write(ready, b"x")
        os.read(wait, 1)
        os._exit(0)
    try:
        assert os.read(started, 1) == b"x", "the child's fork handlers have run"
        conn.close()
        assert sim.counters()["revocations"] == 1, "the live child did not count as a holder"
        assert not entry.exists()
    finally:
        os.write(release, b"x")
        os.waitpid(child, 0)


def test_connections_on_one_memory_store_are_counted_too(sim: Sim) -> None:
    store = MemoryTokenStore()
    first = Connection.from_ionapi(sim.ionapi, revoke_on_close=True, token_store=store)
    second = Connection.from_ionapi(sim.ionapi, revoke_on_close=True, token_store=store)
    assert first.get(USERS_ME).status == 200
    first.close()
    assert sim.counters()["revocations"] == 0
    assert second.get(USERS_ME).status == 200
    second.close()
    assert sim.counters()["revocations"] == 1


def test_an_explicit_revoke_is_honoured_whoever_holds_like_ionflow_logout(sim: Sim, state_dir: Path) -> None:
    entry = entry_of(state_dir, store_key(sim))
    holder = Holder(sim)
    with Connection.from_ionapi(sim.ionapi) as conn:
        conn.revoke()
    assert sim.counters()["revocations"] == 1
    assert not entry.exists()
    # The other holder's token is gone: it renews with a new grant.
    assert holder.ask("call") == "200"
    assert sim.counters()["token_requests"]["password"] == 2
    holder.ask("close")
    holder.finish()
    assert sim.counters()["revocations"] == 2, "it was the last holder of the new grant"
