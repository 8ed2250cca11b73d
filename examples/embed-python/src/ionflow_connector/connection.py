"""``Connection``: a ``.ionapi`` file opened in the connector, callable from any thread."""

from __future__ import annotations

import json as jsonlib
from collections import abc
import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from . import errors, holders
from ._runtime import MEMORY_BYTES, Instance, InstanceHost, Runtime, field_of, record, scrubber
from .holders import Released
from .token_store import FileTokenStore, LockTimeout, StoreConflict, StoreUnavailable, TokenStore
from .transport import RequestsTransport, host_of

Headers = List[Tuple[str, str]]
QueryLike = Union[Mapping[str, Any], Iterable[Tuple[str, Any]], None]
HeadersLike = Union[Mapping[str, str], Iterable[Tuple[str, str]], None]

#: Export calls get this long per request timeout, plus a margin, before they trap
#: (as ionflow: 6 x the request timeout + 30 s).
_DEFAULT_TIMEOUT_MS = 60_000
_METHODS = ("get", "head", "post", "put", "patch", "delete")
#: The token lease taken to delete a grant's stored tokens, and how long to wait
#: for it (as ionflow: longer than a dead holder's lease can last).
_DROP_LEASE_TTL_MS = 30_000
_DROP_LEASE_WAIT_MS = 90_000

log = logging.getLogger("ionflow_connector")


class Grant(str, Enum):
    """How a connection obtains tokens (the WIT ``grant``)."""

    BACKEND_SERVICE = "backend-service"
    CLIENT_CREDENTIALS = "client-credentials"
    AUTHORIZATION_CODE = "authorization-code"
    SAML_BEARER = "saml-bearer"

    @classmethod
    def parse(cls, value: Union["Grant", str]) -> "Grant":
        if isinstance(value, Grant):
            return value
        text = str(value).strip().lower().replace("_", "-")
        for grant in cls:
            if grant.value == text:
                return grant
        choices = ", ".join(g.value for g in cls)
        raise errors.InvalidOptionsError(f"grant `{value}` is not one of {choices}")


@dataclass(frozen=True)
class TokenInfo:
    """The current access token's metadata. ``access_token`` is kept out of ``repr``."""

    access_token: str = field(repr=False)
    token_type: str
    expires_in: int
    scope: Optional[str]
    has_refresh_token: bool
    grant: Grant
    #: True when served from the cache (memory or the token store) without a token request.
    cached: bool


@dataclass(frozen=True)
class ConnectionInfo:
    """A connection's description; every secret is masked by the connector."""

    tenant: str
    application: Optional[str]
    client_id: str
    client_secret: str
    service_account_key: Optional[str]
    service_account_secret: Optional[str]
    portal_url: str
    ion_api_url: str
    token_url: str
    authorization_url: Optional[str]
    revocation_url: Optional[str]
    version: Optional[str]
    grants: Tuple[Grant, ...]
    grant: Grant
    store_key: str
    redirect_uri: Optional[str]


@dataclass(frozen=True)
class AuthorizationStart:
    """Open ``url`` in a browser; the redirect must bring back ``state``."""

    url: str
    state: str


@dataclass(frozen=True)
class Finding:
    severity: str
    field: Optional[str]
    message: str


@dataclass(frozen=True)
class Inspection:
    info: Optional[ConnectionInfo]
    findings: Tuple[Finding, ...]


@dataclass
class Response:
    """A gateway answer: any status the connector does not turn into an error."""

    status: int
    headers: Headers
    body: bytes = field(repr=False)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: str) -> Optional[str]:
        """The first header called ``name`` (case-insensitive)."""
        lower = name.lower()
        return next((v for k, v in self.headers if k.lower() == lower), None)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.body)


class _Secret:
    """Holds the ``.ionapi`` text for opening more instances; never shown."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def expose(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "*****"


def _read_ionapi(source: Union[str, bytes, os.PathLike, Mapping[str, Any]]) -> str:
    if isinstance(source, abc.Mapping):
        return jsonlib.dumps(dict(source))
    if isinstance(source, bytes):
        return source.decode("utf-8")
    if isinstance(source, str) and source.lstrip().startswith("{"):
        return source
    path = Path(source)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise errors.InvalidCredentialsFileError(f"cannot read {path}: {e.strerror or e}") from None


def _secrets_of(ionapi_json: str, extra: Iterable[Optional[str]]) -> List[Optional[str]]:
    try:
        parsed = jsonlib.loads(ionapi_json)
    except ValueError:
        parsed = {}
    values: List[Optional[str]] = list(extra)
    if isinstance(parsed, dict):
        values += [parsed.get(k) for k in ("cs", "saak", "sask") if isinstance(parsed.get(k), str)]
    return values


def _pairs(items: Union[Mapping[str, Any], Iterable[Tuple[str, Any]], None]) -> List[Tuple[str, str]]:
    """Mapping or pairs as ``(str, str)`` pairs; a list value gives repeated pairs."""
    if items is None:
        return []
    source = items.items() if isinstance(items, abc.Mapping) else items
    pairs: List[Tuple[str, str]] = []
    for name, value in source:
        if isinstance(value, (list, tuple)):
            pairs += [(str(name), str(v)) for v in value]
        elif value is not None:
            pairs.append((str(name), str(value)))
    return pairs


def _info(raw: Any) -> ConnectionInfo:
    return ConnectionInfo(
        tenant=raw.tenant,
        application=raw.application,
        client_id=field_of(raw, "client_id"),
        client_secret=field_of(raw, "client_secret"),
        service_account_key=field_of(raw, "service_account_key"),
        service_account_secret=field_of(raw, "service_account_secret"),
        portal_url=field_of(raw, "portal_url"),
        ion_api_url=field_of(raw, "ion_api_url"),
        token_url=field_of(raw, "token_url"),
        authorization_url=field_of(raw, "authorization_url"),
        revocation_url=field_of(raw, "revocation_url"),
        version=raw.version,
        grants=tuple(Grant(g) for g in raw.grants),
        grant=Grant(raw.grant),
        store_key=field_of(raw, "store_key"),
        redirect_uri=field_of(raw, "redirect_uri"),
    )


def _token(raw: Any) -> TokenInfo:
    return TokenInfo(
        access_token=field_of(raw, "access_token"),
        token_type=field_of(raw, "token_type"),
        expires_in=field_of(raw, "expires_in_secs"),
        scope=raw.scope,
        has_refresh_token=field_of(raw, "has_refresh_token"),
        grant=Grant(raw.grant),
        cached=raw.cached,
    )


def inspect(ionapi: Union[str, bytes, os.PathLike, Mapping[str, Any]], *, component: Union[str, os.PathLike, None] = None) -> Inspection:
    """Checks a ``.ionapi`` file without opening a connection or touching the network."""
    text = _read_ionapi(ionapi)
    scrub = scrubber(_secrets_of(text, []))
    runtime = Runtime.load(component)
    host = InstanceHost(RequestsTransport(), _NoStore(), logging.LoggerAdapter(log, {}), scrub)
    instance = runtime.instantiate(host, _deadline(_DEFAULT_TIMEOUT_MS))
    try:
        raw = instance.invoke("inspect", text)
    finally:
        instance.close()
    findings = tuple(Finding(f.severity, f.field, scrub(f.message)) for f in raw.findings)
    return Inspection(info=_info(raw.info) if raw.info is not None else None, findings=findings)


class _NoStore:
    """The store lent to `inspect`, which never touches one."""

    def load(self, key: str) -> None:
        raise StoreUnavailable("no token store here")

    def save(self, key: str, expected_version: int, value: Optional[str]) -> int:
        raise StoreUnavailable("no token store here")

    def lock(self, key: str, ttl_ms: int, timeout_ms: int) -> int:
        raise StoreUnavailable("no token store here")

    def unlock(self, key: str, lease: int) -> None:
        pass


def _deadline(timeout_ms: int) -> float:
    """Seconds an export call may run: six request timeouts plus 30 s, as ionflow allows."""
    return 6 * timeout_ms / 1000 + 30


class Connection:
    """A ``.ionapi`` file opened in the connector, with a pool of instances.

    Open one with :meth:`from_ionapi`. Every method may be called from any
    thread: each call borrows one connector instance (a wasmtime store is not
    thread-safe), creating up to ``instances`` of them; all of them share the
    token store, whose lease makes their first calls cause one token request,
    also across processes (``ionflow`` included) when the store is the file
    store.

    The connection holds its grant (the tokens under its store key) from
    the moment it opens until ``close()``, as every ``ionflow`` process does
    (``holders.py``): on the file store this process joins the grant's
    holders, so that no process, Python or ``ionflow``, revokes it under
    another. Opening waits (up to ``grant_wait`` seconds) while the grant's
    last holder elsewhere is revoking it.

    Used as a context manager (or on ``close()``), the connection keeps its
    grant in the token store for the next user by default, as ``ionflow
    run`` does. A ``saml-bearer`` grant (a user's session) is asked to end,
    and ``revoke_on_close=True`` asks it for any grant but a login
    (``authorization-code``): the grant is then revoked, and its stored
    tokens deleted, only when this process is its last holder and every
    connection of this process on it asked for it; otherwise it is left to
    the last holder, and the close says so in the log.
    """

    def __init__(
        self,
        runtime: Runtime,
        ionapi_json: str,
        options: Any,
        *,
        tokens: TokenStore,
        instances: int,
        revoke_on_close: Optional[bool],
        verify: Union[bool, str],
        proxies: Optional[Mapping[str, str]],
        logger: logging.Logger,
        name: str,
        timeout_ms: int,
        saml_assertion: Optional[str],
        call_deadline: Optional[float] = None,
        memory_bytes: int = MEMORY_BYTES,
        grant_wait: Optional[float] = None,
    ) -> None:
        if instances < 1:
            raise errors.InvalidOptionsError("instances must be at least 1")
        if grant_wait is not None and not 0 <= grant_wait <= 86_400:
            raise errors.InvalidOptionsError(f"grant_wait {grant_wait} is not 0 to 86400 seconds")
        self._runtime = runtime
        self._ionapi = _Secret(ionapi_json)
        self._options = options
        self._tokens = tokens
        self._max = instances
        self._verify = verify
        self._proxies = proxies
        self._name = name
        self._logger = logging.LoggerAdapter(logger, {"connection": name})
        self._scrub = scrubber(_secrets_of(ionapi_json, [saml_assertion]))
        self._deadline = call_deadline if call_deadline is not None else _deadline(timeout_ms)
        self._memory_bytes = memory_bytes
        self._cond = threading.Condition()
        self._idle: List[Instance] = []
        self._closed = False
        self._closing = False
        self._allowed: Tuple[str, ...] = ()
        # The first instance validates the file now (no network call) and is
        # the one that carries an authorization-code login from begin to complete.
        self._count = 1
        self._primary = self._new_instance()
        self._idle.append(self._primary)
        self.info: ConnectionInfo = self._described
        grant = self.info.grant
        if revoke_on_close is None:
            self._revoke_on_close = grant == Grant.SAML_BEARER
        else:
            self._revoke_on_close = revoke_on_close and grant != Grant.AUTHORIZATION_CODE
        wait = holders.join_wait(timeout_ms / 1000) if grant_wait is None else grant_wait
        try:
            self._hold = holders.hold(tokens, self.info.store_key, wait)
        except BaseException:
            self._primary.close()
            raise

    @classmethod
    def from_ionapi(
        cls,
        ionapi: Union[str, bytes, os.PathLike, Mapping[str, Any]],
        *,
        grant: Union[Grant, str, None] = None,
        timeout: Optional[float] = None,
        client_auth: Optional[str] = None,
        renew_before: Optional[int] = None,
        max_payload_bytes: Optional[int] = None,
        saml_assertion: Optional[str] = None,
        token_store: Optional[TokenStore] = None,
        component: Union[str, os.PathLike, None] = None,
        instances: int = 8,
        revoke_on_close: Optional[bool] = None,
        verify: Union[bool, str] = True,
        proxies: Optional[Mapping[str, str]] = None,
        logger: Optional[logging.Logger] = None,
        name: Optional[str] = None,
        call_deadline: Optional[float] = None,
        memory_bytes: int = MEMORY_BYTES,
        grant_wait: Optional[float] = None,
    ) -> "Connection":
        """Opens a connection; no network call happens yet.

        ``ionapi`` is a path to a ``.ionapi`` file, its JSON text, or the parsed
        dict. ``grant`` is ``backend-service`` (the default when the file has
        saak/sask), ``client-credentials``, ``authorization-code`` or
        ``saml-bearer`` (with ``saml_assertion``). ``timeout`` is the timeout of
        each HTTP exchange in seconds (default 60, at most 300).
        ``client_auth`` is ``form`` (default) or ``basic``. ``renew_before`` is
        how many seconds before expiry a token is renewed (default 300).

        Tokens go to ``token_store``, by default the :class:`FileTokenStore` in
        ionflow's state folder, shared with the ``ionflow`` command.
        ``component`` is the connector's ``.wasm`` (default
        ``$IONFLOW_CONNECTOR_WASM``, else the copy bundled in the package).

        ``instances`` bounds the pool of connector instances (one per thread
        calling at the same time). The sandbox: each instance gets
        ``memory_bytes`` of memory (256 MiB) and each export call
        ``call_deadline`` seconds (six request timeouts plus 30 s) before it
        traps; a trapped instance is discarded and replaced.

        The connection holds its grant until ``close()`` (see the class).
        ``grant_wait`` is how many seconds opening waits while another
        process is ending the grant (default, as ionflow: three request
        timeouts plus 30 s); past it, :class:`GrantHoldersError` names the
        lock file.
        """
        text = _read_ionapi(ionapi)
        timeout_ms = None if timeout is None else max(int(round(timeout * 1000)), 1)
        if client_auth is not None and client_auth not in ("form", "basic"):
            raise errors.InvalidOptionsError(f"client_auth `{client_auth}` is not form or basic")
        options = record(
            grant=None if grant is None else Grant.parse(grant).value,
            client_auth=client_auth,
            renew_before_secs=renew_before,
            request_timeout_ms=timeout_ms,
            max_payload_bytes=max_payload_bytes,
            saml_assertion=saml_assertion,
        )
        if token_store is None:
            try:
                token_store = FileTokenStore()
            except StoreUnavailable as e:
                raise errors.TokenStoreError(f"token store: {e}") from None
            if os.environ.get("IONFLOW_STORE", "").startswith("postgres"):
                log.warning(
                    "IONFLOW_STORE names PostgreSQL, which this package does not use: tokens "
                    "are kept in %s and not shared with ionflow processes that use the database",
                    token_store.directory,
                )
        runtime = Runtime.load(component)
        is_path = isinstance(ionapi, (str, os.PathLike)) and not str(ionapi).lstrip().startswith("{")
        label = name or (str(ionapi) if is_path else "ionapi")
        return cls(
            runtime,
            text,
            options,
            tokens=token_store,
            instances=instances,
            revoke_on_close=revoke_on_close,
            verify=verify,
            proxies=proxies,
            logger=logger or logging.getLogger("ionflow_connector.connector"),
            name=label,
            timeout_ms=timeout_ms or _DEFAULT_TIMEOUT_MS,
            saml_assertion=saml_assertion,
            call_deadline=call_deadline,
            memory_bytes=memory_bytes,
            grant_wait=grant_wait,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._count} instance(s)"
        return f"<Connection {self._name!r} tenant={self.info.tenant} grant={self.info.grant.value} {state}>"

    # -- the instance pool -------------------------------------------------------

    def _new_instance(self) -> Instance:
        host = InstanceHost(
            transport=RequestsTransport(self._allowed, verify=self._verify, proxies=self._proxies),
            tokens=self._tokens,
            logger=self._logger,
            scrub=self._scrub,
        )
        instance = self._runtime.instantiate(host, self._deadline, self._memory_bytes)
        try:
            instance.handle = instance.checked("open", self._ionapi.expose(), self._options)
            if not self._allowed:
                described = _info(instance.invoke("describe", instance.handle))
                # The transport may reach only the hosts the file names.
                self._allowed = tuple(
                    h for h in {host_of(described.portal_url), host_of(described.ion_api_url)} if h
                )
                self._described = described
            host.transport.allowed_hosts = frozenset(self._allowed)
        except BaseException:
            instance.close()
            raise
        return instance

    @contextmanager
    def _instance(self, pinned: Optional[Instance] = None) -> Iterator[Instance]:
        instance = self._acquire(pinned)
        try:
            yield instance
        finally:
            self._release(instance)

    def _acquire(self, pinned: Optional[Instance]) -> Instance:
        with self._cond:
            while True:
                if self._closed:
                    raise errors.ConnectorError("the connection is closed")
                if pinned is not None:
                    if pinned.broken:
                        raise errors.ConnectorError(
                            "the connector instance holding the login was discarded; start the login again"
                        )
                    if pinned in self._idle:
                        self._idle.remove(pinned)
                        return pinned
                elif self._idle:
                    return self._idle.pop()
                elif self._count < self._max:
                    self._count += 1
                    break
                self._cond.wait()
        try:
            return self._new_instance()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify_all()
            raise

    def _release(self, instance: Instance) -> None:
        discard = False
        with self._cond:
            if instance.broken or self._closed:
                self._count -= 1
                discard = True
            else:
                self._idle.append(instance)
            self._cond.notify_all()
        if discard:
            instance.close()

    # -- the API -----------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        query: QueryLike = None,
        json: Any = None,
        data: Union[bytes, str, None] = None,
        headers: HeadersLike = None,
        timeout: Optional[float] = None,
    ) -> Response:
        """Sends a request to ``{iu}/{ti}/{path}`` with a bearer token.

        ``path`` is a product path such as
        ``M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm``; ``query`` a mapping
        or pairs (the connector encodes them); ``json`` a value sent as JSON, or
        ``data`` raw bytes. A 401 renews the token and retries once; 401 after
        that, 403, 413, 429 and 504 raise; every other status is returned.
        """
        verb = method.lower()
        if verb not in _METHODS:
            raise errors.InvalidOptionsError(f"method `{method}` is not one of {', '.join(m.upper() for m in _METHODS)}")
        header_pairs = _pairs(headers)
        if json is not None and data is not None:
            raise errors.InvalidOptionsError("pass json or data, not both")
        if json is not None:
            body = jsonlib.dumps(json).encode("utf-8")
            if not any(k.lower() == "content-type" for k, _ in header_pairs):
                header_pairs.append(("content-type", "application/json"))
        elif isinstance(data, str):
            body = data.encode("utf-8")
        else:
            body = bytes(data or b"")
        request = record(
            method=verb,
            path=path,
            query=_pairs(query),
            headers=header_pairs,
            body=body,
            timeout_ms=None if timeout is None else max(int(round(timeout * 1000)), 1),
        )
        with self._instance() as instance:
            raw = instance.checked("call", instance.handle, request)
        return Response(status=raw.status, headers=list(raw.headers), body=raw.body)

    def get(self, path: str, **kwargs: Any) -> Response:
        """``call("GET", path, ...)``."""
        return self.call("get", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Response:
        """``call("POST", path, ...)``."""
        return self.call("post", path, **kwargs)

    def token_info(self) -> TokenInfo:
        """A valid access token's metadata: the cached one, or a new one (one request for everyone)."""
        with self._instance() as instance:
            return _token(instance.checked("token", instance.handle))

    def refresh(self) -> TokenInfo:
        """Forgets the access token and obtains a new one (spending the refresh token, if any)."""
        with self._instance() as instance:
            return _token(instance.checked("refresh", instance.handle))

    def revoke(self) -> None:
        """Revokes the grant now, whoever else holds it, and forgets its tokens for every sharer.

        An explicit end, as ``ionflow logout``: other holders (an ``ionflow
        serve``, another program) are not asked, and their next call needs a
        new grant. To end a grant only when no one else uses it, close with
        ``revoke_on_close=True`` (or ``close(revoke=True)``) instead. A
        revocation that fails still deletes the stored tokens (the gateway
        may or may not have revoked them) and raises.
        """
        try:
            self._revoke_once()
        except errors.ConnectorError:
            self._forget_stored()
            raise

    def _revoke_once(self) -> None:
        with self._instance() as instance:
            instance.checked("revoke", instance.handle)

    def begin_authorization(self, redirect_uri: str, scope: Optional[str] = None) -> AuthorizationStart:
        """Starts an authorization-code login with PKCE; open the returned URL in a browser."""
        with self._instance(self._primary) as instance:
            raw = instance.checked("begin_authorization", instance.handle, redirect_uri, scope)
        return AuthorizationStart(url=raw.url, state=raw.state)

    def complete_authorization(self, code: str, state: str) -> TokenInfo:
        """Exchanges the redirect's code for tokens and stores them (the grant is kept)."""
        with self._instance(self._primary) as instance:
            return _token(instance.checked("complete_authorization", instance.handle, code, state))

    def implicit_authorization_url(self, redirect_uri: str, state: str, scope: Optional[str] = None) -> str:
        """The deprecated implicit grant's URL; prefer :meth:`begin_authorization`."""
        with self._instance() as instance:
            return instance.checked("implicit_authorization_url", instance.handle, redirect_uri, state, scope)

    def close(self, revoke: Optional[bool] = None) -> None:
        """Lets go of the grant and releases the instances.

        ``revoke`` (default: as configured) asks for the grant to end: it is
        revoked, and its stored tokens deleted, only when this process is its
        last holder and every connection of this process on it asked too.
        """
        with self._cond:
            if self._closed or self._closing:
                return
            self._closing = True
        try:
            self._release_grant(self._revoke_on_close if revoke is None else bool(revoke))
        finally:
            with self._cond:
                self._closed = True
                idle, self._idle = self._idle, []
                self._count -= len(idle)
                self._cond.notify_all()
            for instance in idle:
                instance.close()

    def _release_grant(self, revoke: bool) -> None:
        try:
            released = self._hold.release(revoke, self._end_grant)
        except errors.GrantHoldersError as e:
            self._logger.warning(
                "could not find out whether another process holds the grant, so it was kept: %s", e
            )
            return
        if released is Released.OTHERS_HOLD:
            self._logger.info(
                "another live process holds the grant (%s); it is kept for it and not revoked",
                self._hold.path,
            )
        elif released is Released.REVOKED:
            self._logger.info("this process was the grant's last holder: revoked")

    def _end_grant(self) -> Released:
        """Revokes, then deletes the stored tokens whatever the outcome: after a
        timeout the gateway may or may not have revoked them, and no later user
        may trust a token in that state."""
        try:
            self._revoke_once()
            revoked = True
        except errors.ConnectorError as e:
            self._logger.warning(
                "could not revoke the grant (%s); its stored tokens are deleted so that no later "
                "run uses them, and it ends on its own when its refresh token expires",
                e,
            )
            revoked = False
        self._forget_stored()
        return Released.REVOKED if revoked else Released.DROPPED

    def _forget_stored(self) -> None:
        """Deletes the grant's stored tokens under the token lease (logged, not raised)."""
        key = self.info.store_key
        try:
            lease = self._tokens.lock(key, _DROP_LEASE_TTL_MS, _DROP_LEASE_WAIT_MS)
        except LockTimeout:
            self._logger.warning(
                "could not delete the stored tokens: their lease stayed taken for %d s; the next "
                "run finds out they no longer work and requests new ones",
                _DROP_LEASE_WAIT_MS // 1000,
            )
            return
        except StoreUnavailable as e:
            self._logger.warning("could not delete the stored tokens: %s", e)
            return
        try:
            # A conflict means a writer slipped in; delete what it wrote.
            for _ in range(3):
                entry = self._tokens.load(key)
                if entry is None:
                    return
                try:
                    self._tokens.save(key, entry.version, None)
                    return
                except StoreConflict:
                    continue
            self._logger.warning("could not delete the stored tokens: the entry kept changing meanwhile")
        except StoreUnavailable as e:
            self._logger.warning("could not delete the stored tokens: %s", e)
        finally:
            self._tokens.unlock(key, lease)

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
