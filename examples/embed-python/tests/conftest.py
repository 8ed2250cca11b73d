"""Fixtures: the real gateway simulator (`ionflow sim`) on loopback, no mocks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
import requests

REPO = Path(__file__).resolve().parents[3]


def ionflow_bin() -> str:
    """The ionflow binary: $IONFLOW_BIN, else target/release/ionflow of this repository."""
    path = os.environ.get("IONFLOW_BIN") or str(REPO / "target" / "release" / "ionflow")
    if not Path(path).is_file():
        pytest.exit(f"no ionflow binary at {path}: build it or set IONFLOW_BIN", returncode=2)
    return path


class Sim:
    """A running `ionflow sim` and what the tests ask it."""

    def __init__(self, process: subprocess.Popen, base_url: str, ionapi: Path) -> None:
        self.process = process
        self.base_url = base_url
        self.ionapi = ionapi
        self.http = requests.Session()
        self.http.trust_env = False

    def file(self) -> Dict[str, Any]:
        return json.loads(self.ionapi.read_text())

    def counters(self) -> Dict[str, Any]:
        return self.http.get(f"{self.base_url}/__sim/counters", timeout=10).json()

    def token_requests(self) -> Dict[str, int]:
        return self.counters()["token_requests"]

    def post(self, name: str, body: Any = None) -> requests.Response:
        response = self.http.post(f"{self.base_url}/__sim/{name}", json=body or {}, timeout=10)
        assert response.status_code < 300, response.text
        return response

    def secrets(self) -> List[str]:
        """Every secret the simulator knows of: the file's and every token it issued."""
        file = self.file()
        found = [file["cs"], file["saak"], file["sask"]]
        issued = self.http.get(f"{self.base_url}/__sim/tokens", timeout=10).json()
        for tokens in issued.values():
            found += tokens
        return found

    def web_app_file(self, directory: Path) -> Path:
        """The same app's file without a service account (a web or native app)."""
        data = self.file()
        del data["saak"], data["sask"]
        path = directory / "web.ionapi"
        path.write_text(json.dumps(data, indent=2))
        path.chmod(0o600)
        return path


def start_sim(directory: Path, *args: str) -> Sim:
    ionapi = directory / "sim.ionapi"
    process = subprocess.Popen(
        [ionflow_bin(), "sim", "--port", "0", "--items", "300", "--ionapi-out", str(ionapi), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"ionflow sim did not start: {line!r}")
    # The second line says the .ionapi file is written.
    process.stdout.readline()
    return Sim(process, match.group(1), ionapi)


def stop_sim(sim: Sim) -> None:
    sim.process.terminate()
    try:
        sim.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        sim.process.kill()
        sim.process.wait()


@pytest.fixture(scope="session", autouse=True)
def isolated_environment() -> Iterator[Path]:
    """A private state and cache folder for the whole run, for Python and the ionflow CLI."""
    with tempfile.TemporaryDirectory(prefix="ionflow-py-") as root:
        previous = {k: os.environ.get(k) for k in ("IONFLOW_CACHE_DIR", "IONFLOW_STATE_DIR", "IONFLOW_STORE")}
        os.environ["IONFLOW_CACHE_DIR"] = str(Path(root) / "cache")
        os.environ.pop("IONFLOW_STORE", None)
        yield Path(root)
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ionflow's state folder for one test; the default token store lives in it."""
    path = tmp_path / "state"
    monkeypatch.setenv("IONFLOW_STATE_DIR", str(path))
    return path


@pytest.fixture
def sim(tmp_path: Path, state_dir: Path) -> Iterator[Sim]:
    running = start_sim(tmp_path)
    try:
        yield running
    finally:
        stop_sim(running)


def ionflow(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs the ionflow CLI with this test's environment (state and cache folders)."""
    result = subprocess.run(
        [ionflow_bin(), *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ)
    )
    if check:
        assert result.returncode == 0, f"ionflow {' '.join(args)}: {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def python_child(code: str, *, timeout: float = 120) -> subprocess.Popen:
    """Starts another Python process running ``code`` with this test's environment."""
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    )


def items_pipeline(
    directory: Path,
    ionapi: Path,
    *,
    schedule: Optional[str] = None,
    connection_lines: str = "",
) -> Path:
    """``directory/items.toml``: M3 items by key (pages of 100) to out.jsonl, for
    `ionflow run` or `ionflow serve`; ``connection_lines`` go into its connection."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "items.toml"
    path.write_text(
        (f'schedule = "{schedule}"\n' if schedule else "")
        + f"""
[connections.m3]
ionapi_file = "{ionapi}"
{connection_lines}

[source]
kind = "m3_list"
connection = "m3"
program = "MMS200MI"
transaction = "LstItmByItm"
key_field = "ITNO"
page_size = 100

[[sinks]]
kind = "file"
path = "out.jsonl"
"""
    )
    return path


def assert_no_secret(texts: List[str], secrets: List[str]) -> None:
    assert len(secrets) >= 3
    for index, secret in enumerate(secrets):
        for text in texts:
            assert secret not in text, f"secret #{index} appears in the output"


def playing_the_browser(url: str) -> Dict[str, str]:
    """What a browser would bring back: the simulator consents at once and redirects."""
    browser = requests.Session()
    browser.trust_env = False
    response = browser.get(url, allow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    from urllib.parse import parse_qs, urlsplit

    params = parse_qs(urlsplit(location).query)
    return {"code": params["code"][0], "state": params["state"][0]}
