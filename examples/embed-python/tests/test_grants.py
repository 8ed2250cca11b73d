"""Every grant the simulator supports, through the Python host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import Sim, ionflow, playing_the_browser
from ionflow_connector import (
    AuthenticationError,
    Connection,
    FileTokenStore,
    Grant,
    InvalidGrantError,
    InvalidOptionsError,
    MemoryTokenStore,
)

USERS_ME = "ifsservice/usermgt/v2/users/me"


def whoami(conn: Connection) -> str:
    response = conn.get(USERS_ME)
    assert response.status == 200, response.text
    return response.json()["response"]["userlist"][0]["userName"]


def test_backend_service_keeps_its_grant_on_exit_by_default(sim: Sim, state_dir: Path) -> None:
    with Connection.from_ionapi(sim.ionapi) as conn:
        assert whoami(conn) == "svc_ionflow@acme.example"
        entry = FileTokenStore(state_dir / "tokens").entry_path(conn.info.store_key)
    assert sim.counters()["revocations"] == 0, "another process may share the grant"
    assert entry.is_file(), "kept for the next user"
    with Connection.from_ionapi(sim.ionapi) as conn:
        assert whoami(conn) == "svc_ionflow@acme.example"
    assert sim.counters()["token_requests"]["password"] == 1, "the next user reused it"


def test_backend_service_asks_one_token_and_revokes_on_exit(sim: Sim, state_dir: Path) -> None:
    with Connection.from_ionapi(sim.ionapi, revoke_on_close=True) as conn:
        assert conn.info.grant is Grant.BACKEND_SERVICE
        assert whoami(conn) == "svc_ionflow@acme.example"
        assert whoami(conn) == "svc_ionflow@acme.example"
        token = conn.token_info()
        assert token.cached and token.has_refresh_token and token.grant is Grant.BACKEND_SERVICE
        entry = FileTokenStore(state_dir / "tokens").entry_path(conn.info.store_key)
        assert entry.is_file()
    counters = sim.counters()
    assert counters["token_requests"]["password"] == 1
    assert counters["api_calls"] == 2
    assert counters["revocations"] == 1, "the grant is revoked on exit"
    assert counters["wrong_host"] == 0
    assert not entry.exists(), "the revoked tokens are forgotten in the shared store"


@pytest.mark.parametrize("client_auth", ["form", "basic"])
def test_client_credentials(sim: Sim, client_auth: str) -> None:
    with Connection.from_ionapi(
        sim.ionapi, grant="client_credentials", client_auth=client_auth, token_store=MemoryTokenStore()
    ) as conn:
        assert whoami(conn) == "svc_ionflow@acme.example"
        token = conn.token_info()
        assert token.grant is Grant.CLIENT_CREDENTIALS and token.cached and not token.has_refresh_token
    counters = sim.counters()
    assert counters["token_requests"]["client_credentials"] == 1
    assert counters["token_requests"]["password"] == 0
    assert counters["token_errors"] == 0, "the client's credentials were encoded right"


def test_saml_bearer_with_a_portal_assertion(sim: Sim) -> None:
    assertion = sim.http.get(f"{sim.base_url}/__sim/saml-assertion", timeout=10).text
    with Connection.from_ionapi(sim.ionapi, grant=Grant.SAML_BEARER, saml_assertion=assertion) as conn:
        assert whoami(conn) == "svc_ionflow@acme.example"
    assert sim.token_requests()["saml_bearer"] == 1

    forged = assertion.replace('ID="_', 'ID="_forged')
    with pytest.raises(AuthenticationError) as refused:
        with Connection.from_ionapi(sim.ionapi, grant="saml-bearer", saml_assertion=forged) as conn:
            conn.get(USERS_ME)
    assert "Assertion" not in str(refused.value) and forged not in repr(refused.value)

    with pytest.raises(InvalidOptionsError, match="SAML assertion"):
        Connection.from_ionapi(sim.ionapi, grant="saml-bearer")


def test_authorization_code_login_is_kept_and_rotated_with_the_cli(sim: Sim, tmp_path: Path) -> None:
    web = sim.web_app_file(tmp_path)
    with Connection.from_ionapi(web, grant="authorization-code") as conn:
        start = conn.begin_authorization("http://127.0.0.1:9/callback")
        assert "code_challenge_method=S256" in start.url
        redirect = playing_the_browser(start.url)
        assert redirect["state"] == start.state
        token = conn.complete_authorization(redirect["code"], redirect["state"])
        assert token.grant is Grant.AUTHORIZATION_CODE and token.has_refresh_token
        assert whoami(conn) == "svc_ionflow@acme.example"
    counters = sim.counters()
    assert counters["token_requests"]["authorization_code"] == 1
    assert counters["revocations"] == 0, "a user's grant is kept on exit"

    # The ionflow CLI spends and rotates the stored refresh token ...
    ionflow("keepalive", str(web))
    assert sim.token_requests()["refresh_token"] == 1
    # ... and Python renews from the rotated one after the access token died.
    sim.post("expire-tokens")
    with Connection.from_ionapi(web, grant="authorization-code") as conn:
        assert whoami(conn) == "svc_ionflow@acme.example"
    counters = sim.counters()
    assert counters["token_requests"]["refresh_token"] == 2
    assert counters["refresh_token_reuse"] == 0
    assert counters["token_requests"]["authorization_code"] == 1, "no new login was needed"

    # `ionflow logout` revokes it, and the login is gone for Python too.
    ionflow("logout", str(web))
    assert sim.counters()["revocations"] == 1
    with pytest.raises(InvalidGrantError, match="log in"):
        with Connection.from_ionapi(web, grant="authorization-code") as conn:
            conn.get(USERS_ME)


def test_implicit_grant_url(sim: Sim, tmp_path: Path) -> None:
    with Connection.from_ionapi(sim.web_app_file(tmp_path), grant="authorization-code") as conn:
        url = conn.implicit_authorization_url("http://127.0.0.1:9/spa", "xyz")
    assert "response_type=token" in url


def test_wrong_service_account_secret_is_an_invalid_grant(sim: Sim, tmp_path: Path) -> None:
    data = sim.file()
    data["sask"] = data["sask"][:-3] + "xyz"
    wrong = tmp_path / "wrong.ionapi"
    wrong.write_text(json.dumps(data))
    with pytest.raises(InvalidGrantError) as refused:
        with Connection.from_ionapi(wrong) as conn:
            conn.get(USERS_ME)
    for secret in (data["sask"], data["saak"], data["cs"]):
        assert secret not in str(refused.value) and secret not in repr(refused.value)
