"""The file token store: the same files as ionflow's, so tokens are shared both ways."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from conftest import Sim, ionflow, items_pipeline
from ionflow_connector import Connection, FileTokenStore, TokenStoreError, default_state_dir

USERS_ME = "ifsservice/usermgt/v2/users/me"


def test_the_default_folder_is_ionflows(state_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_state_dir() == state_dir
    monkeypatch.delenv("IONFLOW_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "ionflow"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "ionflow"


def test_a_token_from_the_cli_is_reused_by_python(sim: Sim) -> None:
    out = ionflow("token", str(sim.ionapi), "--json").stdout
    assert json.loads(out)["cached"] is False
    with Connection.from_ionapi(sim.ionapi, revoke_on_close=False) as conn:
        assert conn.token_info().cached
        assert conn.get(USERS_ME).status == 200
    assert sim.token_requests()["password"] == 1, "Python asked for no token of its own"


def test_a_token_from_python_is_reused_by_the_cli_and_a_run(sim: Sim, tmp_path: Path, state_dir: Path) -> None:
    with Connection.from_ionapi(sim.ionapi, revoke_on_close=False) as conn:
        assert not conn.token_info().cached
        key = conn.info.store_key

    # The entry is where and how ionflow keeps it.
    folder = state_dir / "tokens"
    entry = folder / f"{hashlib.sha256(key.encode()).digest()[:16].hex()}.json"
    stored = json.loads(entry.read_text())
    assert list(stored) == ["key", "version", "value"] and stored["key"] == key
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert not [name for name in os.listdir(folder) if ".tmp" in name]

    assert json.loads(ionflow("token", str(sim.ionapi), "--json").stdout)["cached"] is True
    pipeline = items_pipeline(tmp_path, sim.ionapi)
    ionflow("run", str(pipeline), "--quiet")
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 300
    counters = sim.counters()
    assert counters["token_requests"]["password"] == 1, "the CLI and the run reused Python's token"
    # `ionflow run` keeps the grant for the next run (README, "Who ends a grant").
    assert counters["revocations"] == 0, "the run kept the grant it shared with Python"
    assert entry.exists(), "the kept grant stays in the store for the next run"


def test_a_rotated_refresh_token_is_shared(sim: Sim) -> None:
    """Each side spends the refresh token the other one stored last (Infor rotates it)."""
    ionflow("token", str(sim.ionapi))
    with Connection.from_ionapi(sim.ionapi, revoke_on_close=False) as conn:
        assert conn.refresh().has_refresh_token
        ionflow("keepalive", str(sim.ionapi))
        assert conn.refresh().has_refresh_token
        assert conn.get(USERS_ME).status == 200
    counters = sim.counters()
    assert counters["token_requests"]["password"] == 1
    assert counters["token_requests"]["refresh_token"] == 3
    assert counters["refresh_token_reuse"] == 0, "no side ever spent a stale refresh token"
    assert counters["unauthorized"] == 0


def test_versions_are_compare_and_swap_across_implementations(sim: Sim, state_dir: Path) -> None:
    ionflow("token", str(sim.ionapi))
    with Connection.from_ionapi(sim.ionapi, revoke_on_close=False) as conn:
        key = conn.info.store_key
    store = FileTokenStore(state_dir / "tokens")
    entry = store.load(key)
    assert entry is not None and entry.version > 0
    from ionflow_connector.token_store import StoreConflict

    with pytest.raises(StoreConflict):
        store.save(key, entry.version - 1, "stale")
    newer = store.save(key, entry.version, entry.value)
    assert newer > entry.version
    # ionflow reads what Python rewrote.
    assert json.loads(ionflow("token", str(sim.ionapi), "--json").stdout)["cached"] is True


def test_an_unreadable_entry_is_a_token_store_error(sim: Sim, state_dir: Path) -> None:
    with Connection.from_ionapi(sim.ionapi, revoke_on_close=False, instances=1) as conn:
        conn.token_info()
        entry = FileTokenStore(state_dir / "tokens").entry_path(conn.info.store_key)
    entry.write_text("{not json")
    with Connection.from_ionapi(sim.ionapi, revoke_on_close=False, instances=1) as conn:
        with pytest.raises(TokenStoreError, match="is not a token-store entry; delete it|not a token-store entry"):
            conn.get(USERS_ME)
        entry.unlink()
        assert conn.get(USERS_ME).status == 200, "the pool replaced the discarded instance"
    assert sim.token_requests()["password"] == 2
