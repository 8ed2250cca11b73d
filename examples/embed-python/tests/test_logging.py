"""The connector's log goes to `logging`, and no secret goes anywhere."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from conftest import Sim, assert_no_secret, playing_the_browser
from ionflow_connector import TRACE, Connection, ConnectorError, FileTokenStore, MemoryTokenStore

USERS_ME = "ifsservice/usermgt/v2/users/me"


def test_no_secret_in_logs_exceptions_or_reprs(
    sim: Sim, caplog: pytest.LogCaptureFixture, tmp_path: Path, state_dir: Path
) -> None:
    caplog.set_level(TRACE)
    seen: list = []
    assertion = sim.http.get(f"{sim.base_url}/__sim/saml-assertion", timeout=10).text

    with Connection.from_ionapi(sim.ionapi, revoke_on_close=True) as conn:  # the revocation logs too
        seen += [repr(conn), repr(conn.info), str(conn.info)]
        token = conn.token_info()
        seen += [repr(token), str(token)]
        assert conn.get(USERS_ME).status == 200
        sim.post("expire-tokens")  # a 401, a renewal with the refresh token
        response = conn.get(USERS_ME)
        seen += [repr(response)]
        conn.refresh()
        for fault in ({"status": 403}, {"status": 429, "retry_after_secs": 3}, {"status": 504}, {"drop_connection": True}):
            sim.post("faults", {"count": 1, **fault})
            with pytest.raises(ConnectorError) as failed:
                conn.get(USERS_ME)
            seen += [str(failed.value), repr(failed.value)]
        seen += [repr(FileTokenStore(state_dir / "tokens")), repr(FileTokenStore(state_dir / "tokens").load(conn.info.store_key))]

    wrong = sim.file()
    wrong["sask"] += "x"
    with pytest.raises(ConnectorError) as refused:
        Connection.from_ionapi(json.dumps(wrong), token_store=MemoryTokenStore()).get(USERS_ME)
    seen += [str(refused.value), repr(refused.value)]

    with Connection.from_ionapi(sim.ionapi, grant="saml-bearer", saml_assertion=assertion, token_store=MemoryTokenStore()) as conn:
        conn.get(USERS_ME)
    with Connection.from_ionapi(sim.web_app_file(tmp_path), grant="authorization-code", token_store=MemoryTokenStore()) as conn:
        start = conn.begin_authorization("http://127.0.0.1:9/cb")
        redirect = playing_the_browser(start.url)
        seen += [repr(conn.complete_authorization(redirect["code"], redirect["state"]))]

    connector_lines = [r for r in caplog.records if r.name.startswith("ionflow_connector")]
    assert any("requesting a token" in r.getMessage() for r in connector_lines), "the connector's log arrived"
    assert any(r.levelno == logging.INFO for r in connector_lines)
    secrets = sim.secrets() + [assertion]
    assert_no_secret([caplog.text, *(r.getMessage() for r in caplog.records), *seen], secrets)
