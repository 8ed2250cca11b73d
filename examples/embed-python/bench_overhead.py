#!/usr/bin/env python3
"""Per-call overhead of the Python host against plain ``requests``, on ``ionflow sim``.

Both sides send the same GET over loopback with a cached token: the host
through the connector component (wasmtime, the three capabilities, one
instance), the baseline with a ``requests.Session`` and the bearer token
copied from the host. Batches alternate sides so that drift on a busy machine
hits both alike. Prints every batch's mean per-call time (the raw numbers),
then per path the medians, their difference (the overhead) and their ratio.

    python bench_overhead.py                       # starts ionflow sim itself
    python bench_overhead.py --rounds 20 --batch 300 --json results.json

IONFLOW_BIN names the ionflow binary (default target/release/ionflow of this
repository); the component is found as the package finds it
(IONFLOW_CONNECTOR_WASM, else the bundled copy).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import requests

from ionflow_connector import Connection, MemoryTokenStore

PATHS = {
    "users/me": ("ifsservice/usermgt/v2/users/me", {}),
    "LstItmByItm 100": ("M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm", {"maxrecs": "100"}),
}


def start_sim(directory: Path) -> "tuple[subprocess.Popen, Path]":
    repo = Path(__file__).resolve().parents[2]
    binary = os.environ.get("IONFLOW_BIN") or str(repo / "target" / "release" / "ionflow")
    ionapi = directory / "sim.ionapi"
    process = subprocess.Popen(
        [binary, "sim", "--port", "0", "--items", "1000", "--ionapi-out", str(ionapi)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = process.stdout.readline() if process.stdout else ""
    if not re.search(r"listening on http://", line):
        process.kill()
        sys.exit(f"ionflow sim did not start ({binary}): {line!r}")
    process.stdout.readline()  # "credentials written to ..."
    return process, ionapi


def timed_batch(call: Callable[[], None], batch: int) -> "tuple[float, float]":
    """Mean wall-clock and CPU seconds (this process's) per call over one batch."""
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batch):
        call()
    return (time.perf_counter() - start) / batch, (time.process_time() - cpu) / batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="batches per side and path")
    parser.add_argument("--batch", type=int, default=200, help="calls per batch")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ionflow-bench-") as tmp:
        sim, ionapi = start_sim(Path(tmp))
        try:
            file = json.loads(ionapi.read_text())
            conn = Connection.from_ionapi(ionapi, token_store=MemoryTokenStore(), instances=1, revoke_on_close=False)
            token = conn.token_info().access_token
            session = requests.Session()
            session.trust_env = False
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            results: Dict[str, Dict[str, List[float]]] = {}
            print(f"# {args.rounds} rounds x {args.batch} calls per side, alternating; mean us per call per batch")
            print("# wall: elapsed time; cpu: CPU time of this Python process (the simulator excluded)")
            for label, (path, query) in PATHS.items():
                url = f"{file['iu']}/{file['ti']}/{path}"

                def host() -> None:
                    response = conn.get(path, query=query)
                    assert response.status == 200

                def plain() -> None:
                    response = session.get(url, params=query, headers=headers, allow_redirects=False)
                    assert response.status_code == 200
                    response.content

                sides = {"python-host": host, "requests": plain}
                for call in sides.values():  # warm up connections, caches and the JIT'd paths
                    timed_batch(call, 20)
                runs: Dict[str, List[float]] = {f"{name} {kind}": [] for name in sides for kind in ("wall", "cpu")}
                for round_ in range(args.rounds):
                    order = list(sides) if round_ % 2 == 0 else list(reversed(list(sides)))
                    for name in order:
                        wall, cpu = timed_batch(sides[name], args.batch)
                        runs[f"{name} wall"].append(wall * 1e6)
                        runs[f"{name} cpu"].append(cpu * 1e6)
                for name, values in runs.items():
                    print(f"{label:16} {name:17} " + " ".join(f"{v:7.1f}" for v in values))
                results[label] = runs
            conn.close()
        finally:
            sim.terminate()
            sim.wait(timeout=10)

    print()
    summary: Dict[str, Dict[str, float]] = {}
    for label, runs in results.items():
        for kind in ("wall", "cpu"):
            host_us = statistics.median(runs[f"python-host {kind}"])
            plain_us = statistics.median(runs[f"requests {kind}"])
            summary[f"{label} {kind}"] = {
                "python_host_us": round(host_us, 1),
                "requests_us": round(plain_us, 1),
                "overhead_us": round(host_us - plain_us, 1),
                "ratio": round(host_us / plain_us, 2),
            }
            print(
                f"{label:16} {kind:4} median python-host {host_us:8.1f} us, requests {plain_us:8.1f} us: "
                f"overhead {host_us - plain_us:8.1f} us per call, ratio {host_us / plain_us:.2f}"
            )
    if args.json:
        args.json.write_text(json.dumps({"rounds": args.rounds, "batch": args.batch, "raw_us": results, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
