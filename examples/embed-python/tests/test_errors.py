"""The gateway's answers that become typed exceptions, 401 renewal, and the transport's rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import Sim
from ionflow_connector import (
    Connection,
    ForbiddenError,
    GatewayTimeoutError,
    InvalidCredentialsFileError,
    InvalidOptionsError,
    MemoryTokenStore,
    PayloadTooLargeError,
    RateLimitedError,
    ThrottledError,
    TransportError,
    UnauthorizedError,
)
from ionflow_connector.transport import RequestsTransport, TransportFailure

USERS_ME = "ifsservice/usermgt/v2/users/me"
ITEMS = "M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm"


@pytest.fixture
def conn(sim: Sim):
    with Connection.from_ionapi(sim.ionapi, token_store=MemoryTokenStore(), timeout=5) as opened:
        yield opened


def test_an_expired_token_is_renewed_once_on_401(sim: Sim, conn: Connection) -> None:
    assert conn.get(USERS_ME).status == 200
    sim.post("expire-tokens")
    assert conn.get(USERS_ME).status == 200, "renewed and retried"
    counters = sim.counters()
    assert counters["unauthorized"] == 1
    renewals = counters["token_requests"]["refresh_token"] + counters["token_requests"]["password"]
    assert renewals == 2, counters["token_requests"]


def test_a_revoked_token_is_renewed_too(sim: Sim, conn: Connection) -> None:
    assert conn.get(USERS_ME).status == 200
    sim.post("revoke-tokens")
    assert conn.get(USERS_ME).status == 200
    assert sim.counters()["unauthorized"] == 1


def test_a_401_that_persists_is_unauthorized(sim: Sim, conn: Connection) -> None:
    sim.post("reject-tokens", {"enabled": True})
    with pytest.raises(UnauthorizedError, match="renewed token"):
        conn.get(USERS_ME)
    assert sim.counters()["unauthorized"] == 2


def test_forbidden_names_the_scope(conn: Connection) -> None:
    with pytest.raises(ForbiddenError) as forbidden:
        conn.get("IDM/api/items/search")
    assert forbidden.value.scope == "IDM"
    assert forbidden.value.kind == "forbidden"


def test_throttled_with_retry_after(sim: Sim, conn: Connection) -> None:
    sim.post("throttle", {"count": 1, "retry_after_secs": 7})
    with pytest.raises(ThrottledError) as throttled:
        conn.get(USERS_ME)
    assert isinstance(throttled.value, RateLimitedError)
    assert throttled.value.retry_after == 7
    assert conn.get(USERS_ME).status == 200


def test_gateway_timeout(sim: Sim, conn: Connection) -> None:
    sim.post("faults", {"path_prefix": "M3", "count": 1, "status": 504})
    with pytest.raises(GatewayTimeoutError, match="maxrecs"):
        conn.get(ITEMS, query={"maxrecs": 5})


def test_payload_too_large_before_sending_and_from_the_gateway(sim: Sim) -> None:
    with Connection.from_ionapi(sim.ionapi, token_store=MemoryTokenStore(), max_payload_bytes=64) as conn:
        with pytest.raises(PayloadTooLargeError) as refused:
            conn.post("M3/m3api-rest/v2/execute", json={"program": "MMS200MI", "padding": "x" * 100})
        assert refused.value.limit_bytes == 64 and refused.value.size_bytes > 64
        assert sim.counters()["api_calls"] == 0, "nothing was sent"
        sim.post("faults", {"path_prefix": "M3", "count": 1, "status": 413})
        with pytest.raises(PayloadTooLargeError):
            conn.get(ITEMS, query={"maxrecs": 1})


def test_other_statuses_are_answers(conn: Connection) -> None:
    response = conn.get("M3/m3api-rest/v2/execute/NOSUCHMI/Nothing")
    assert response.status >= 400
    assert response.body, "the product's message is there to read"
    missing = conn.get("LN/no/such/api")
    assert missing.status == 404


def test_a_slow_answer_is_a_transport_timeout(sim: Sim) -> None:
    with Connection.from_ionapi(sim.ionapi, token_store=MemoryTokenStore(), timeout=1) as conn:
        conn.token_info()  # the token request is not the slow one
        sim.post("faults", {"path_prefix": "M3", "count": 1, "delay_ms": 2500})
        with pytest.raises(TransportError, match="within 1000 ms"):
            conn.get(ITEMS, query={"maxrecs": 1})
        # A per-call timeout overrides the connection's, both ways.
        sim.post("faults", {"path_prefix": "M3", "count": 1, "delay_ms": 1500})
        assert conn.get(ITEMS, query={"maxrecs": 1}, timeout=5).status == 200
        sim.post("faults", {"path_prefix": "M3", "count": 1, "delay_ms": 800})
        with pytest.raises(TransportError, match="within 300 ms"):
            conn.get(ITEMS, query={"maxrecs": 1}, timeout=0.3)


def test_a_dropped_connection_is_a_transport_error(sim: Sim, conn: Connection) -> None:
    conn.token_info()
    sim.post("faults", {"path_prefix": "M3", "count": 1, "drop_connection": True})
    with pytest.raises(TransportError):
        conn.get(ITEMS, query={"maxrecs": 1})
    assert conn.get(ITEMS, query={"maxrecs": 1}).status == 200, "the pool recovers"


def test_bad_files_and_options(sim: Sim, tmp_path: Path) -> None:
    with pytest.raises(InvalidCredentialsFileError):
        Connection.from_ionapi('{"ti": "ACME_TST"}', token_store=MemoryTokenStore())
    with pytest.raises(InvalidCredentialsFileError, match="cannot read"):
        Connection.from_ionapi(tmp_path / "missing.ionapi")
    web = sim.file()
    del web["saak"], web["sask"]
    with pytest.raises(InvalidOptionsError, match="client-credentials"):
        Connection.from_ionapi(web)
    with pytest.raises(InvalidOptionsError):
        Connection.from_ionapi(sim.ionapi, grant="password")
    with pytest.raises(InvalidOptionsError, match="timeout"):
        Connection.from_ionapi(sim.ionapi, timeout=301)
    with Connection.from_ionapi(json.loads(sim.ionapi.read_text()), token_store=MemoryTokenStore()) as conn:
        with pytest.raises(InvalidOptionsError, match="Authorization"):
            conn.get(USERS_ME, headers={"Authorization": "Bearer x"})
        with pytest.raises(InvalidOptionsError, match="query parameters"):
            conn.get(USERS_ME + "?x=1")


# -- the transport capability on its own --------------------------------------------


def test_the_transport_refuses_hosts_outside_the_file(sim: Sim) -> None:
    transport = RequestsTransport(["127.0.0.1"])
    url = sim.base_url.replace("127.0.0.1", "localhost") + "/__sim/counters"
    with pytest.raises(TransportFailure) as refused:
        transport.send("get", url, [], b"", 1000)
    assert refused.value.kind == "refused" and "localhost" in str(refused.value.why)
    with pytest.raises(TransportFailure) as plain:
        RequestsTransport(["example.com"]).send("get", "http://example.com/", [], b"", 1000)
    assert plain.value.kind == "refused", "plain http only to loopback"
    with pytest.raises(TransportFailure) as nothing_yet:
        RequestsTransport().send("get", sim.base_url, [], b"", 1000)
    assert nothing_yet.value.kind == "refused"


def test_the_transport_follows_no_redirect(sim: Sim) -> None:
    file = sim.file()
    transport = RequestsTransport(["localhost"])
    url = (
        f"{file['pu']}{file['oa']}?response_type=code&client_id={file['ci']}"
        "&redirect_uri=http://127.0.0.1:9/cb&state=s&code_challenge=x&code_challenge_method=S256"
    )
    response = transport.send("get", url, [], b"", 5000)
    assert response.status == 302, "the redirect is returned, not followed"
    location = next(v for k, v in response.headers if k.lower() == "location")
    assert location.startswith("http://127.0.0.1:9/cb?code="), "and its target was never asked"


def test_the_transport_reports_connect_failures_and_timeouts(sim: Sim) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    transport = RequestsTransport(["127.0.0.1"])
    with pytest.raises(TransportFailure) as refused:
        transport.send("get", f"http://127.0.0.1:{closed_port}/", [], b"", 2000)
    assert refused.value.kind == "connect"
    with socket.socket() as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(TransportFailure) as slow:
            transport.send("get", f"http://127.0.0.1:{port}/", [], b"", 300)
    assert slow.value.kind == "timeout"
