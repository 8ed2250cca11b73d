"""The ionflow connector (a WebAssembly component) hosted in Python.

The component implements the world ``ionflow:gateway/connector@0.1.0``: it
knows ``.ionapi`` files, Infor's grants, token reuse and rotation and the ION
API Gateway's error semantics. This package lends it the three capabilities
it imports, in Python: HTTP through ``requests``, ionflow's file token store
(shared with the ``ionflow`` command) and ``logging``.

    from ionflow_connector import Connection

    with Connection.from_ionapi("tenant.ionapi") as conn:
        me = conn.get("ifsservice/usermgt/v2/users/me").json()
"""

from .connection import (
    AuthorizationStart,
    Connection,
    ConnectionInfo,
    Finding,
    Grant,
    Inspection,
    Response,
    TokenInfo,
    inspect,
)
from .errors import (
    AuthenticationError,
    ComponentError,
    ConnectorError,
    ConnectorTrapError,
    ForbiddenError,
    GatewayTimeoutError,
    GrantHoldersError,
    InvalidClientError,
    InvalidCredentialsFileError,
    InvalidGrantError,
    InvalidOptionsError,
    PayloadTooLargeError,
    ProtocolError,
    RateLimitedError,
    ThrottledError,
    TokenStoreError,
    TransportError,
    UnauthorizedError,
    UnsupportedError,
)
from .token_store import Entry, FileTokenStore, MemoryTokenStore, TokenStore, default_state_dir
from ._runtime import ENV_COMPONENT, TRACE, WORLD, find_component

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "AuthorizationStart",
    "ComponentError",
    "Connection",
    "ConnectionInfo",
    "ConnectorError",
    "ConnectorTrapError",
    "ENV_COMPONENT",
    "Entry",
    "FileTokenStore",
    "Finding",
    "ForbiddenError",
    "GatewayTimeoutError",
    "Grant",
    "GrantHoldersError",
    "Inspection",
    "InvalidClientError",
    "InvalidCredentialsFileError",
    "InvalidGrantError",
    "InvalidOptionsError",
    "MemoryTokenStore",
    "PayloadTooLargeError",
    "ProtocolError",
    "RateLimitedError",
    "Response",
    "TRACE",
    "ThrottledError",
    "TokenInfo",
    "TokenStore",
    "TokenStoreError",
    "TransportError",
    "UnauthorizedError",
    "UnsupportedError",
    "WORLD",
    "default_state_dir",
    "find_component",
    "inspect",
]
