"""Values across the component boundary: bodies byte for byte, headers, and types read once.

The package converts ``list<u8>`` in bulk (_fastbytes) and keeps component
types instead of reading them on every call (_typecache). These tests send
real HTTP on loopback: tokens from ``ionflow sim``, calls to a small echo
server named as the file's ``iu``, so that what the connector sent can be
compared with what came back.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from conftest import Sim
from ionflow_connector import Connection, ConnectorTrapError, MemoryTokenStore, _fastbytes, _typecache

#: wasmtime copies a list<u8> through its C API as one 48-byte value a byte, and
#: stops a call that copies more than 128 MiB that way: 2,796,202 bytes less the
#: call's other values (URL, headers).
LARGEST_BODY = 128 * 1024 * 1024 // 48
UNDER_THE_BUDGET = LARGEST_BODY - 64 * 1024


class _Echo(BaseHTTPRequestHandler):
    """Answers with the request body as received (or X-Answer-Size bytes), the method and X- headers."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        if self.headers.get("x-answer-size"):
            body = b"z" * int(self.headers["x-answer-size"])
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-method", self.command)
        for name, value in self.headers.items():
            if name.lower().startswith("x-"):
                self.send_header(f"x-echo-{name.lower()[2:]}", value)
        self.send_header("x-repeated", "one")
        self.send_header("x-repeated", "two")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo_conn(sim: Sim, tmp_path: Path) -> Iterator[Connection]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    data = sim.file()
    data["iu"] = f"http://127.0.0.1:{server.server_address[1]}"
    ionapi = tmp_path / "echo.ionapi"
    ionapi.write_text(json.dumps(data))
    ionapi.chmod(0o600)
    try:
        with Connection.from_ionapi(ionapi, token_store=MemoryTokenStore(), instances=1) as conn:
            yield conn
    finally:
        server.shutdown()
        server.server_close()


def _bodies() -> List[Tuple[str, bytes]]:
    every_byte = bytes(range(256))
    return [
        ("empty", b""),
        ("one byte", b"\x00"),
        ("every byte value", every_byte),
        ("every byte value, 2 MiB", every_byte * (2 * 1024 * 1024 // 256)),
        ("not UTF-8", b"\xff\xfe\x80" * 1000),
    ]


def test_bodies_arrive_and_return_byte_for_byte(echo_conn: Connection) -> None:
    assert _fastbytes.install(), "the bulk list<u8> path is not in place for this wasmtime"
    for label, body in _bodies():
        response = echo_conn.post("echo/path", data=body, headers={"X-Label": label})
        assert response.status == 200, label
        assert response.body == body, f"{label}: {len(response.body)} bytes back for {len(body)}"
        assert response.header("x-method") == "POST"
        assert response.header("x-echo-label") == label
        assert [v for k, v in response.headers if k.lower() == "x-repeated"] == ["one", "two"]


def test_a_body_past_wasmtimes_copy_budget_is_a_typed_error_and_the_pool_carries_on(echo_conn: Connection) -> None:
    assert echo_conn.post("edge", data=b"q" * UNDER_THE_BUDGET, headers={"X-Answer-Size": "0"}).body == b""
    assert len(echo_conn.get("edge", headers={"X-Answer-Size": str(UNDER_THE_BUDGET)}).body) == UNDER_THE_BUDGET
    with pytest.raises(ConnectorTrapError, match="too much data"):
        echo_conn.post("too-big", data=b"q" * (LARGEST_BODY + 1), headers={"X-Answer-Size": "0"})
    with pytest.raises(ConnectorTrapError, match="too much data"):
        echo_conn.get("too-big", headers={"X-Answer-Size": str(LARGEST_BODY + 1)})
    assert echo_conn.post("after", data=b"fine").body == b"fine"


def test_text_and_json_bodies_and_headers_keep_their_characters(echo_conn: Connection) -> None:
    value = {"name": "Ångström ☃ 𝄞", "quote": "\"'\\", "n": 1}
    response = echo_conn.call("put", "echo", json=value, headers=[("X-Word", "naïve")])
    assert response.json() == value
    assert response.header("x-method") == "PUT"
    assert response.header("x-echo-word") == "naïve"
    text = "Ångström ☃ 𝄞 " * 1000
    assert echo_conn.post("echo", data=text).text == text


def test_component_types_are_read_once_not_per_call(echo_conn: Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    from wasmtime.component import _types

    assert _typecache.install(), "the type cache is not in place for this wasmtime"
    echo_conn.post("warm", data=b"x")  # the first call of each import reads its types
    built = []
    original = _types.valtype_from_ptr

    def counting(ptr: object) -> object:
        built.append(1)
        return original(ptr)  # type: ignore[arg-type]

    monkeypatch.setattr(_types, "valtype_from_ptr", counting)
    for _ in range(3):
        assert echo_conn.post("again", data=b"abc").body == b"abc"
    assert built == [], f"{len(built)} value types were read from the C API during 3 calls"
