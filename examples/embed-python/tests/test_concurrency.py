"""Single flight: many threads, instances and processes, one token request."""

from __future__ import annotations

import subprocess
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conftest import Sim, ionflow_bin, python_child
from ionflow_connector import Connection, FileTokenStore, MemoryTokenStore

USERS_ME = "ifsservice/usermgt/v2/users/me"


def first_calls(conn: Connection, threads: int) -> list:
    barrier = threading.Barrier(threads)

    def one(_: int) -> int:
        barrier.wait()
        return conn.get(USERS_ME).status

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(threads)))


def test_64_threads_making_first_calls_cause_one_token_request(sim: Sim) -> None:
    # Each answer takes 100 ms, so calls overlap when the instances run in parallel.
    sim.post("faults", {"count": 64, "delay_ms": 100})
    with Connection.from_ionapi(sim.ionapi, instances=16, revoke_on_close=False) as conn:
        statuses = first_calls(conn, 64)
    assert statuses == [200] * 64
    counters = sim.counters()
    assert sum(counters["token_requests"].values()) == 1, counters["token_requests"]
    assert counters["api_calls"] == 64
    assert counters["max_in_flight"] > 1, "the instances called in parallel"


def test_single_flight_with_the_memory_store_too(sim: Sim) -> None:
    with Connection.from_ionapi(sim.ionapi, instances=8, token_store=MemoryTokenStore()) as conn:
        assert first_calls(conn, 32) == [200] * 32
    assert sim.token_requests()["password"] == 1


def test_single_flight_across_processes_and_the_cli(sim: Sim) -> None:
    child = textwrap.dedent(
        f"""
        import threading
        from ionflow_connector import Connection
        conn = Connection.from_ionapi({str(sim.ionapi)!r}, instances=4, revoke_on_close=False)
        barrier = threading.Barrier(16)
        statuses = []
        def one():
            barrier.wait()
            statuses.append(conn.get({USERS_ME!r}).status)
        threads = [threading.Thread(target=one) for _ in range(16)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        conn.close()
        print(sorted(set(statuses)))
        """
    )
    children = [python_child(child) for _ in range(3)]
    clis = [
        subprocess.Popen([ionflow_bin(), "token", str(sim.ionapi)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for process in children + clis:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, f"{out}\n{err}"
        if process in children:
            assert out.strip() == "[200]", err
    counters = sim.counters()
    assert sum(counters["token_requests"].values()) == 1, counters["token_requests"]
    assert counters["api_calls"] == 48


def test_the_lease_is_the_same_os_lock_as_ionflows(sim: Sim, state_dir: Path) -> None:
    """While Python holds the lease, `ionflow token` waits for it instead of asking Infor."""
    with Connection.from_ionapi(sim.ionapi, revoke_on_close=False) as conn:
        key = conn.info.store_key
    store = FileTokenStore(state_dir / "tokens")
    lease = store.lock(key, 60_000, 1_000)
    try:
        cli = subprocess.Popen([ionflow_bin(), "token", str(sim.ionapi), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(4)
        assert cli.poll() is None, "ionflow finished while Python held the lease"
        assert sim.token_requests()["password"] == 0
    finally:
        store.unlock(key, lease)
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err
    assert sim.token_requests()["password"] == 1
