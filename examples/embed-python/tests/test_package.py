"""Finding the component, inspecting files, and the README's example as written."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import ionflow_connector
from conftest import Sim
from ionflow_connector import ComponentError, Connection, MemoryTokenStore, find_component, inspect, m3

PACKAGE = Path(__file__).resolve().parents[1]


def test_the_component_is_found_by_argument_environment_or_package_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IONFLOW_CONNECTOR_WASM", raising=False)
    bundled = find_component()
    assert bundled.name == "ionflow-connector.wasm"
    assert bundled.parent == Path(ionflow_connector.__file__).parent, "installed as package data"
    copy = tmp_path / "copy.wasm"
    shutil.copy(bundled, copy)
    monkeypatch.setenv("IONFLOW_CONNECTOR_WASM", str(copy))
    assert find_component() == copy
    assert find_component(bundled) == bundled
    monkeypatch.setenv("IONFLOW_CONNECTOR_WASM", str(tmp_path / "missing.wasm"))
    with pytest.raises(ComponentError, match="IONFLOW_CONNECTOR_WASM"):
        find_component()
    (tmp_path / "junk.wasm").write_bytes(b"\0asm junk")
    with pytest.raises(ComponentError, match="not a usable component"):
        Connection.from_ionapi("{}", component=tmp_path / "junk.wasm", token_store=MemoryTokenStore())


def test_the_bundled_component_is_the_one_the_cli_exports(tmp_path: Path) -> None:
    from conftest import ionflow

    ionflow("connector", "export", "--out", str(tmp_path / "now.wasm"))
    assert (tmp_path / "now.wasm").read_bytes() == find_component().read_bytes(), (
        "the installed package carries a stale component: run ./run-tests again"
    )


def test_inspect_without_network(sim: Sim) -> None:
    found = inspect(sim.ionapi)
    assert found.info is not None and found.info.tenant == "ACME_TST"
    assert "*" in found.info.client_secret and found.info.client_secret != sim.file()["cs"]
    assert any(f.field in ("iu", "pu") for f in found.findings), "http:// URLs are flagged"
    assert sim.counters()["token_requests"]["password"] == 0


def test_m3_paging_by_key(sim: Sim) -> None:
    with Connection.from_ionapi(sim.ionapi, token_store=MemoryTokenStore()) as conn:
        items = list(m3.list_records(conn, "MMS200MI", "LstItmByItm", key="ITNO", page_size=70))
    assert len(items) == 300
    assert len({i["ITNO"] for i in items}) == 300
    assert sim.counters()["calls_by_path"]["/ACME_TST/M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm"] == 5


def test_the_readme_example_runs(sim: Sim, tmp_path: Path) -> None:
    readme = (PACKAGE / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    shutil.copy(sim.ionapi, tmp_path / "tenant.ionapi")
    import sys

    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "svc_ionflow@acme.example"
    assert lines[1] == "300"
