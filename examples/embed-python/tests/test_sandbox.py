"""A misbehaving component traps at its deadline or memory limit; the pool carries on.

The component is tests/fixtures/runaway-connector, which `cargo test` builds
(tests/e2e/sandbox.rs); the test is skipped where it has not been built.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from conftest import REPO
from ionflow_connector import Connection, ConnectorTrapError, MemoryTokenStore

FIXTURE = Path(
    os.environ.get("IONFLOW_RUNAWAY_WASM")
    or REPO / "target" / "tmp" / "runaway-connector" / "wasm32-wasip2" / "release" / "runaway_connector.wasm"
)


@pytest.fixture
def runaway(tmp_path: Path) -> Path:
    if not FIXTURE.is_file():
        pytest.skip(f"{FIXTURE} is not built (cargo test --release builds it)")
    copy = tmp_path / "runaway.wasm"
    shutil.copy(FIXTURE, copy)
    return copy


def test_a_runaway_component_traps_and_the_pool_carries_on(runaway: Path) -> None:
    with Connection.from_ionapi(
        "{}",
        component=runaway,
        token_store=MemoryTokenStore(),
        instances=1,
        call_deadline=0.8,
        memory_bytes=32 * 1024 * 1024,
    ) as conn:
        assert conn.get("hello").body == b"ok"

        started = time.monotonic()
        with pytest.raises(ConnectorTrapError, match="deadline of 800 ms"):
            conn.get("spin")
        took = time.monotonic() - started
        assert 0.8 <= took < 10, f"stopped after {took:.2f} s"  # generous: CI machines are busy
        assert conn.get("hello").body == b"ok", "a fresh instance replaced the trapped one"

        with pytest.raises(ConnectorTrapError):
            conn.get("grow")
        with pytest.raises(ConnectorTrapError):
            conn.get("panic")
        assert conn.get("hello").status == 200
