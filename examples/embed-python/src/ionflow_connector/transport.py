"""The ``transport`` capability: one HTTP exchange through ``requests``.

The connector builds every URL and header itself and decides what to retry, so
this sends exactly what it is given and hands back whatever came: no
redirects followed (a redirect could carry the bearer token or the client
secret to another host), no retries, no cookies, no credentials from
``~/.netrc`` or the environment, and only to the hosts the ``.ionapi`` file
names (``pu``'s and ``iu``'s). ``timeout_ms`` bounds the whole exchange:
connecting, sending and reading the full body.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from typing import Collection, List, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

import requests
import requests.adapters
import urllib3

#: ionflow refuses larger answers rather than buffering them.
MAX_RESPONSE_BYTES = 512 * 1024 * 1024
_CHUNK = 256 * 1024
_USER_AGENT = "ionflow-connector-python/0.1"

Headers = List[Tuple[str, str]]


@dataclass
class IncomingResponse:
    status: int
    headers: Headers
    body: bytes


class TransportFailure(Exception):
    """The WIT ``transport-error``: ``kind`` is refused, connect, timeout or other.

    ``why`` never holds a header or a body (it ends up in error messages).
    """

    def __init__(self, kind: str, why: Optional[str] = None) -> None:
        super().__init__(f"{kind}: {why}" if why else kind)
        self.kind = kind
        self.why = why


def host_of(url: str) -> str:
    """The lowercase host of ``url``, without IPv6 brackets."""
    return (urlsplit(url).hostname or "").lower()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _chain(error: BaseException) -> List[BaseException]:
    """The exception and its causes (``reason``, a wrapped first argument, ``__cause__``)."""
    found: List[BaseException] = []
    current: Optional[BaseException] = error
    while current is not None and all(current is not seen for seen in found):
        found.append(current)
        reason = getattr(current, "reason", None)
        nested = current.args[0] if current.args and isinstance(current.args[0], BaseException) else None
        current = reason if isinstance(reason, BaseException) else nested or current.__cause__ or current.__context__
    return found


def _caused_by(error: BaseException, kinds: Tuple[type, ...]) -> bool:
    return any(isinstance(e, kinds) for e in _chain(error))


def _reason(error: BaseException) -> str:
    """A short cause (the OS error's text, else the deepest exception's name): no URL, no header."""
    chain = _chain(error)
    for cause in chain:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    return type(chain[-1]).__name__


class RequestsTransport:
    """Sends the connector's requests through a ``requests`` HTTP adapter of its own.

    The adapter is used directly, without a ``Session``: a session would add
    default headers, keep cookies, read ``~/.netrc`` and the proxy variables,
    and read a redirect's body to prepare the next request even when asked not
    to follow it. One instance serves one connector instance (one thread at a
    time) and keeps its connections alive. ``verify`` is a CA bundle path, or
    ``True`` for certifi's roots; ``proxies`` are used only when given.
    """

    def __init__(
        self,
        allowed_hosts: Collection[str] = (),
        *,
        verify: Union[bool, str] = True,
        proxies: Optional[Mapping[str, str]] = None,
    ) -> None:
        # Until the .ionapi file is known, every destination is refused.
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        # max_retries=0: no retry of any kind, and errors raised as they happened.
        self._adapter = requests.adapters.HTTPAdapter(max_retries=0)
        self._verify = verify
        self._proxies = dict(proxies) if proxies else {}

    def close(self) -> None:
        self._adapter.close()

    def send(
        self, method: str, url: str, headers: Headers, body: bytes, timeout_ms: int
    ) -> IncomingResponse:
        """One exchange; raises :class:`TransportFailure`."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if host not in self.allowed_hosts:
            allowed = ", ".join(sorted(self.allowed_hosts)) or "none yet"
            raise TransportFailure(
                "refused", f"{host} is not one of the hosts named in the .ionapi file ({allowed})"
            )
        if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(host)):
            raise TransportFailure("refused", f"{parts.scheme}:// to {host}: only https (http to loopback)")
        deadline = time.monotonic() + max(timeout_ms, 1) / 1000
        merged = _merge(headers)
        if not any(name.lower() == "user-agent" for name, _ in merged):
            merged.append(("User-Agent", _USER_AGENT))
        try:
            prepared = requests.Request(method.upper(), url, headers=dict(merged), data=body or None).prepare()
            left = max(deadline - time.monotonic(), 0.001)
            response = self._adapter.send(
                prepared,
                stream=True,
                timeout=(left, left),
                verify=self._verify,
                proxies=self._proxies,
            )
        except requests.exceptions.Timeout:
            raise TransportFailure("timeout") from None
        except (requests.exceptions.SSLError, requests.exceptions.ConnectionError) as e:
            # urllib3's NewConnectionError is a (connect) TimeoutError too: ask about it first.
            if _is_connect(e):
                raise TransportFailure("connect", _reason(e)) from None
            if _caused_by(e, (urllib3.exceptions.TimeoutError, TimeoutError)):
                raise TransportFailure("timeout") from None
            raise TransportFailure("other", _reason(e)) from None
        except (requests.exceptions.RequestException, ValueError) as e:
            raise TransportFailure("other", _reason(e)) from None
        try:
            return IncomingResponse(
                status=response.status_code,
                headers=list(_raw_headers(response)),
                body=self._read_body(response, deadline),
            )
        finally:
            response.close()

    def _read_body(self, response: requests.Response, deadline: float) -> bytes:
        """The whole body, as sent (no decompression), before ``deadline``."""
        length = response.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_RESPONSE_BYTES:
            raise TransportFailure("other", f"response larger than {MAX_RESPONSE_BYTES} bytes refused")
        raw = response.raw
        chunks = []
        size = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportFailure("timeout")
            _set_read_timeout(raw, remaining)
            try:
                chunk = raw.read(_CHUNK, decode_content=False)
            except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
                raise TransportFailure("timeout") from None
            except (urllib3.exceptions.HTTPError, OSError) as e:
                raise TransportFailure("other", _reason(e)) from None
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise TransportFailure("other", f"response larger than {MAX_RESPONSE_BYTES} bytes refused")
            chunks.append(chunk)
        return b"".join(chunks)


def _merge(headers: Headers) -> List[Tuple[str, str]]:
    """Repeated names joined with a comma, as HTTP allows (requests takes a dict)."""
    merged: dict = {}
    names: dict = {}
    for name, value in headers:
        lower = name.lower()
        if lower in merged:
            merged[lower] = f"{merged[lower]}, {value}"
        else:
            merged[lower] = value
            names[lower] = name
    return [(names[k], v) for k, v in merged.items()]


def _raw_headers(response: requests.Response) -> List[Tuple[str, str]]:
    """Every response header in order, repeated ones included, names as received."""
    raw_headers = getattr(response.raw, "headers", None)
    if raw_headers is not None and hasattr(raw_headers, "iteritems"):
        return [(k, v) for k, v in raw_headers.iteritems()]
    return list(response.headers.items())


def _set_read_timeout(raw: urllib3.HTTPResponse, seconds: float) -> None:
    """Bounds the next socket read by what is left of the exchange's deadline."""
    connection = getattr(raw, "connection", None) or getattr(raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            sock.settimeout(max(seconds, 0.001))
        except OSError:
            pass


def _is_connect(error: BaseException) -> bool:
    """Whether no connection was made (DNS, refused, TLS), as opposed to one that broke."""
    return _caused_by(
        error,
        (
            requests.exceptions.SSLError,
            urllib3.exceptions.NewConnectionError,
            urllib3.exceptions.NameResolutionError,
            ConnectionRefusedError,
        ),
    )
