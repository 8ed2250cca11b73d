"""Typed exceptions, one per case of the WIT ``error`` variant.

Every message comes from the connector, which writes it for the person who has
to fix the problem (it names the field, setting or grant) and never puts a
secret in it. The host scrubs the ``.ionapi`` file's secrets from it once more
before raising, so neither ``str()`` nor ``repr()`` of an exception can show
one.
"""

from __future__ import annotations

from typing import Callable, Optional


class ConnectorError(Exception):
    """Base class of everything this package raises about a connection.

    ``kind`` is the WIT case (``"invalid-grant"``, ``"forbidden"``, ...) or a
    host-side kind (``"component"``, ``"trap"``).
    """

    kind: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidCredentialsFileError(ConnectorError):
    """The ``.ionapi`` JSON is unusable; the message names the field and the fix."""

    kind = "invalid-credentials-file"


class InvalidOptionsError(ConnectorError):
    """An option does not fit the file (a grant it cannot do, a bad path, ...)."""

    kind = "invalid-options"


class AuthenticationError(ConnectorError):
    """Infor refused to authenticate: the base of the three "auth refused" cases."""


class UnauthorizedError(AuthenticationError):
    """401 on a business call that persisted after the token was renewed once."""

    kind = "unauthorized"


class InvalidGrantError(AuthenticationError):
    """``invalid_grant``: wrong saak/sask, a rotated or revoked refresh token, no login yet."""

    kind = "invalid-grant"


class InvalidClientError(AuthenticationError):
    """``invalid_client``, ``unauthorized_client`` or ``unsupported_grant_type``."""

    kind = "invalid-client"


class ForbiddenError(ConnectorError):
    """403: the authorized app lacks a scope or the service account a role.

    ``scope`` is the scope the gateway named (``scope="..."`` in its
    ``WWW-Authenticate`` challenge), when it named one.
    """

    kind = "forbidden"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        marker = "(required scope: "
        start = message.find(marker)
        self.scope: Optional[str] = None
        if start >= 0:
            end = message.find(")", start)
            if end > start:
                self.scope = message[start + len(marker) : end]


class RateLimitedError(ConnectorError):
    """429 from the gateway's quota or spike-arrest policy.

    ``retry_after`` is the gateway's ``Retry-After`` in seconds, when it sent one.
    """

    kind = "rate-limited"

    def __init__(self, message: str, retry_after: Optional[int]) -> None:
        super().__init__(message)
        self.retry_after = retry_after


#: The issue calls it "throttled"; both names work.
ThrottledError = RateLimitedError


class GatewayTimeoutError(ConnectorError):
    """504: the product did not answer within the gateway's timeout."""

    kind = "gateway-timeout"


class PayloadTooLargeError(ConnectorError):
    """The request body exceeds the payload limit (refused before sending, or 413)."""

    kind = "payload-too-large"

    def __init__(self, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(
            f"request body of {size_bytes} bytes exceeds the payload limit of "
            f"{limit_bytes} bytes; send smaller batches"
        )
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class TransportError(ConnectorError):
    """The request could not be delivered: connect, TLS, timeout, or a refused host."""

    kind = "transport"


class ProtocolError(ConnectorError):
    """The gateway answered with something its protocol does not allow."""

    kind = "protocol"


class TokenStoreError(ConnectorError):
    """The token store failed, or a lease was not obtained in time."""

    kind = "token-store"


class GrantHoldersError(TokenStoreError):
    """This process could not join (or leave) a grant's holders.

    ``path`` is the lock file beside the token entry
    (``<stem>.holders.lock``): it could not be opened or locked, or another
    process was still ending (revoking) the grant when the wait ran out.
    It is None for a store no other process shares, where only another
    connection of this process can have been ending the grant.
    """

    def __init__(self, message: str, path: Optional[str]) -> None:
        super().__init__(message)
        self.path = path


class UnsupportedError(ConnectorError):
    """Not possible on this connection (a refresh without a refresh token, ...)."""

    kind = "unsupported"


class ComponentError(ConnectorError):
    """The connector component could not be found, compiled or instantiated."""

    kind = "component"


class ConnectorTrapError(ConnectorError):
    """The component trapped (a bug, a deadline, memory); the instance was discarded."""

    kind = "trap"


_SIMPLE = {
    cls.kind: cls
    for cls in (
        InvalidCredentialsFileError,
        InvalidOptionsError,
        UnauthorizedError,
        InvalidGrantError,
        InvalidClientError,
        ForbiddenError,
        GatewayTimeoutError,
        TransportError,
        ProtocolError,
        TokenStoreError,
        UnsupportedError,
    )
}


def from_wit(tag: str, payload: object, scrub: Callable[[str], str]) -> ConnectorError:
    """The exception for one WIT ``error`` value (``tag`` and its payload)."""
    if tag == "rate-limited":
        message = scrub(str(getattr(payload, "message", "")))
        return RateLimitedError(message, getattr(payload, "retry-after-secs", None))
    if tag == "payload-too-large":
        return PayloadTooLargeError(
            int(getattr(payload, "size-bytes", 0)), int(getattr(payload, "limit-bytes", 0))
        )
    cls = _SIMPLE.get(tag)
    if cls is None:
        return ConnectorError(f"{tag}: {scrub(str(payload))}")
    return cls(scrub(str(payload)))
