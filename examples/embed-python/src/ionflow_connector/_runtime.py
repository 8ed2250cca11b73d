"""Loading the connector component and running instances of it.

wasmtime for Python's component bindgen cannot handle resources, so this uses
its low-level component API: a :class:`wasmtime.component.Linker` with the
three ``ionflow:gateway`` imports as Python functions and WASI 0.2 with
nothing granted, ``Func`` calls with records as attribute objects, variants
as :class:`wasmtime.component.Variant`, and the ``connection`` resource as a
``ResourceAny`` handle.

A wasmtime ``Store`` is not thread-safe: each :class:`Instance` has its own
store and is used by one thread at a time (the pool in ``connection.py``
sees to that). The Python functions behind the imports are registered once
per linker and find the instance that is calling them through a
thread-local, since a thread runs one export call at a time.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import logging
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Set, Tuple, Union

import wasmtime
from wasmtime import component as wc

from . import _fastbytes, _typecache, errors
from .token_store import LockTimeout, StoreConflict, StoreUnavailable, TokenStore
from .transport import RequestsTransport, TransportFailure

PACKAGE = "ionflow:gateway"
VERSION = "0.1.0"
WORLD = f"{PACKAGE}/connector@{VERSION}"
BUNDLED_NAME = "ionflow-connector.wasm"
ENV_COMPONENT = "IONFLOW_CONNECTOR_WASM"

#: Linear memory of one instance, as ionflow allows.
MEMORY_BYTES = 256 * 1024 * 1024
#: The epoch ticks every this many seconds; export calls get a deadline in ticks.
EPOCH_TICK_SECONDS = 0.05


def _deadline_ticks(deadline: float) -> int:
    """Ticks for ``deadline`` seconds: the ticker's next tick may come at once,
    so one more tick than the deadline holds, and a call is never stopped early."""
    return math.ceil(deadline / EPOCH_TICK_SECONDS) + 1

try:
    _WASMTIME_VERSION = importlib.metadata.version("wasmtime")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - vendored copies
    _WASMTIME_VERSION = "unknown"

# Bodies are list<u8>: convert them in bulk, not byte by byte (see _fastbytes).
_fastbytes.install()
# Types are read from the C API once, not on every call (see _typecache).
_typecache.install()

TRACE = 5
logging.addLevelName(TRACE, "TRACE")
_LEVELS = {"trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


def _iface(name: str) -> str:
    return f"{PACKAGE}/{name}@{VERSION}"


def record(**fields: Any) -> wc.Record:
    """A WIT record; ``snake_case`` keyword names become the WIT's ``kebab-case``."""
    value = wc.Record()
    for name, item in fields.items():
        setattr(value, name.replace("_", "-"), item)
    return value


def field_of(value: Any, name: str) -> Any:
    """A field of a record that came from the component, by its ``snake_case`` name."""
    return getattr(value, name.replace("_", "-"))


# -- locating and compiling the component ----------------------------------------


def find_component(path: Union[str, os.PathLike, None] = None) -> Path:
    """The component file: ``path``, else ``$IONFLOW_CONNECTOR_WASM``, else the bundled copy."""
    if path is not None:
        chosen, origin = Path(path), "the component argument"
    elif os.environ.get(ENV_COMPONENT):
        chosen, origin = Path(os.environ[ENV_COMPONENT]), f"${ENV_COMPONENT}"
    else:
        bundled = importlib.resources.files(__package__).joinpath(BUNDLED_NAME)
        if not bundled.is_file():
            raise errors.ComponentError(
                "no connector component: write one with `ionflow connector export --out "
                f"ionflow-connector.wasm` and pass component=PATH, set {ENV_COMPONENT}, or "
                f"install the package with {BUNDLED_NAME} beside its __init__.py"
            )
        chosen, origin = Path(str(bundled)), "the bundled package data"
    if not chosen.is_file():
        raise errors.ComponentError(f"{chosen} (from {origin}) is not a file")
    return chosen


def _cache_dir() -> Optional[Path]:
    """ionflow's cache folder (``IONFLOW_CACHE_DIR``, ``XDG_CACHE_HOME``, ``~/.cache``)."""
    if os.environ.get("IONFLOW_CACHE_DIR"):
        return Path(os.environ["IONFLOW_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "ionflow"
    if os.environ.get("HOME"):
        return Path(os.environ["HOME"]) / ".cache" / "ionflow"
    return None


def _private_and_mine(path: Path) -> bool:
    """Only an artifact this user wrote and nobody else can write is deserialized."""
    try:
        info = path.stat()
        parent = path.parent.stat()
    except OSError:
        return False
    uid = os.getuid()
    return info.st_uid == uid and parent.st_uid == uid and not (info.st_mode | parent.st_mode) & 0o022


class Runtime:
    """One engine, one compiled component and one linker, shared by every instance.

    Compiling takes a second or two; the precompiled artifact is cached in
    ionflow's cache folder under the component's digest (a file of this
    package's own, since ionflow's artifacts come from another wasmtime).
    """

    _shared: Dict[str, "Runtime"] = {}
    _shared_lock = threading.Lock()

    def __init__(self, wasm: bytes, digest: str, cache: bool = True) -> None:
        config = wasmtime.Config()
        config.epoch_interruption = True
        self.engine = wasmtime.Engine(config)
        self.digest = digest
        self.component = self._compile(wasm, cache)
        self.linker = wc.Linker(self.engine)
        self._instantiate_lock = threading.Lock()
        try:
            self.linker.add_wasip2()
            with self.linker.root() as root:
                with root.add_instance(_iface("types")):
                    pass
                with root.add_instance(_iface("transport")) as transport:
                    _typecache.add_func(transport, "send", _host_send)
                with root.add_instance(_iface("token-store")) as store:
                    _typecache.add_func(store, "load", _host_load)
                    _typecache.add_func(store, "save", _host_save)
                    _typecache.add_func(store, "lock", _host_lock)
                    _typecache.add_func(store, "unlock", _host_unlock)
                with root.add_instance(_iface("log")) as log:
                    _typecache.add_func(log, "log", _host_log)
        except wasmtime.WasmtimeError as e:
            raise errors.ComponentError(f"could not link the connector's imports: {e}") from None
        _Ticker.start(self.engine)

    @classmethod
    def load(cls, path: Union[str, os.PathLike, None] = None) -> "Runtime":
        """The runtime for the component at ``path`` (see :func:`find_component`), compiled once per process."""
        file = find_component(path)
        wasm = file.read_bytes()
        digest = hashlib.sha256(wasm).hexdigest()
        with cls._shared_lock:
            runtime = cls._shared.get(digest)
            if runtime is None:
                runtime = cls._shared[digest] = cls(wasm, digest)
            return runtime

    def _compile(self, wasm: bytes, cache: bool) -> wc.Component:
        directory = _cache_dir() if cache else None
        artifact = None
        if directory is not None:
            artifact = directory / f"python-wasmtime-{_WASMTIME_VERSION}-{self.digest[:32]}.cwasm"
            if artifact.is_file() and _private_and_mine(artifact):
                try:
                    return wc.Component.deserialize_file(self.engine, str(artifact))
                except wasmtime.WasmtimeError:
                    pass  # stale or foreign: compile again and replace it
        try:
            component = wc.Component(self.engine, wasm)
        except wasmtime.WasmtimeError as e:
            raise errors.ComponentError(f"the file is not a usable component: {e}") from None
        if artifact is not None:
            try:
                directory.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
                tmp = artifact.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(component.serialize())
                os.replace(tmp, artifact)
            except OSError:
                pass  # a cache is an optimisation
        return component

    def instantiate(self, host: "InstanceHost", deadline: float, memory_bytes: int = MEMORY_BYTES) -> "Instance":
        """A new instance in a store of its own; ``deadline`` (seconds) bounds each export call."""
        store = wasmtime.Store(self.engine)
        store.set_wasi(wasmtime.WasiConfig())  # no arguments, environment, files or sockets
        store.set_limits(memory_size=memory_bytes)
        deadline_ticks = _deadline_ticks(deadline)
        store.set_epoch_deadline(deadline_ticks)
        try:
            with self._instantiate_lock:
                instance = self.linker.instantiate(store, self.component)
        except wasmtime.WasmtimeError as e:
            raise errors.ComponentError(
                f"the component does not fit the {WORLD} world: {e}"
            ) from None
        return Instance(self, store, instance, host, deadline)


class _Ticker:
    """Advances the engine's epoch so that a runaway export call traps."""

    _engines: list = []
    _lock = threading.Lock()
    _thread: Optional[threading.Thread] = None

    @classmethod
    def start(cls, engine: wasmtime.Engine) -> None:
        with cls._lock:
            cls._engines.append(engine)
            if cls._thread is None:
                cls._thread = threading.Thread(target=cls._run, name="ionflow-epoch", daemon=True)
                cls._thread.start()

    @classmethod
    def _run(cls) -> None:
        stop = threading.Event()
        while not stop.wait(EPOCH_TICK_SECONDS):
            for engine in list(cls._engines):
                engine.increment_epoch()


# -- the imports -----------------------------------------------------------------


@dataclass
class InstanceHost:
    """What the imports of one instance reach: its transport, the shared store, the log."""

    transport: RequestsTransport
    tokens: TokenStore
    logger: logging.LoggerAdapter
    scrub: Callable[[str], str]
    #: Leases this instance holds; released for it if it traps while holding one.
    leases: Set[Tuple[str, int]] = field(default_factory=set)
    #: An error an import could not report through its WIT result.
    failure: Optional[errors.ConnectorError] = None

    def release_leases(self) -> None:
        for key, lease in list(self.leases):
            try:
                self.tokens.unlock(key, lease)
            except Exception:  # noqa: BLE001 - best effort on an instance being discarded
                pass
        self.leases.clear()


_active = threading.local()


def _host() -> InstanceHost:
    host = getattr(_active, "host", None)
    if host is None:
        raise wasmtime.WasmtimeError("connector import called outside an export call")
    return host


def _host_send(_store: Any, request: Any) -> Any:
    host = _host()
    try:
        response = host.transport.send(
            request.method,
            request.url,
            list(request.headers),
            request.body,
            field_of(request, "timeout_ms"),
        )
    except TransportFailure as failure:
        if failure.kind == "timeout":
            return wc.Variant("timeout")
        return wc.Variant(failure.kind, host.scrub(failure.why or failure.kind))
    except Exception as e:  # noqa: BLE001 - a host bug must not become a trap with a secret in it
        return wc.Variant("other", f"the Python transport failed: {type(e).__name__}")
    return record(status=response.status, headers=response.headers, body=response.body)


def _store_error(host: InstanceHost, error: Exception) -> Any:
    if isinstance(error, StoreConflict):
        current = error.current
        return wc.Variant(
            "conflict", None if current is None else record(value=current.value, version=current.version)
        )
    if isinstance(error, LockTimeout):
        return wc.Variant("lock-timeout")
    if isinstance(error, StoreUnavailable):
        return wc.Variant("unavailable", host.scrub(str(error)))
    return wc.Variant("unavailable", f"the Python token store failed: {type(error).__name__}")


def _host_load(_store: Any, key: str) -> Any:
    host = _host()
    try:
        entry = host.tokens.load(key)
    except Exception as e:  # noqa: BLE001
        # wasmtime-py lowers an untagged `result<option<entry>, _>` as `ok` whatever
        # the value, so an error cannot travel back through the result: trap, and
        # let the export call raise it (the instance is then discarded).
        why = host.scrub(str(e)) if isinstance(e, StoreUnavailable) else type(e).__name__
        host.failure = errors.TokenStoreError(f"token store: {why}")
        raise wasmtime.WasmtimeError("token store unavailable") from None
    if entry is None:
        return None
    return record(value=entry.value, version=entry.version)


def _host_save(_store: Any, key: str, expected_version: int, value: Optional[str]) -> Any:
    host = _host()
    try:
        return host.tokens.save(key, expected_version, value)
    except Exception as e:  # noqa: BLE001
        return _store_error(host, e)


def _host_lock(_store: Any, key: str, ttl_ms: int, timeout_ms: int) -> Any:
    host = _host()
    try:
        lease = host.tokens.lock(key, ttl_ms, timeout_ms)
    except Exception as e:  # noqa: BLE001
        return _store_error(host, e)
    host.leases.add((key, lease))
    return lease


def _host_unlock(_store: Any, key: str, lease: int) -> None:
    host = _host()
    host.leases.discard((key, lease))
    try:
        host.tokens.unlock(key, lease)
    except Exception:  # noqa: BLE001 - unlock has no way to report; the OS lock ends with the process
        pass


def _host_log(_store: Any, level: str, message: str) -> None:
    host = getattr(_active, "host", None)
    if host is not None:
        host.logger.log(_LEVELS.get(level, logging.INFO), "%s", host.scrub(message))


# -- instances -------------------------------------------------------------------


class Instance:
    """One instantiated connector in its own store; one thread at a time."""

    def __init__(
        self,
        runtime: Runtime,
        store: wasmtime.Store,
        instance: wc.Instance,
        host: InstanceHost,
        deadline: float,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.host = host
        self.deadline = deadline
        self.deadline_ticks = _deadline_ticks(deadline)
        self.broken = False
        self.handle: Optional[wc.ResourceAny] = None
        auth = instance.get_export_index(store, _iface("auth"))
        gateway = instance.get_export_index(store, _iface("gateway"))
        if auth is None or gateway is None:
            raise errors.ComponentError(f"the component does not export {_iface('auth')} and {_iface('gateway')}")
        self.funcs: Dict[str, wc.Func] = {}
        names = {
            "inspect": (auth, "inspect"),
            "open": (auth, "[static]connection.open"),
            "describe": (auth, "[method]connection.describe"),
            "token": (auth, "[method]connection.token"),
            "refresh": (auth, "[method]connection.refresh"),
            "revoke": (auth, "[method]connection.revoke"),
            "begin_authorization": (auth, "[method]connection.begin-authorization"),
            "complete_authorization": (auth, "[method]connection.complete-authorization"),
            "implicit_authorization_url": (auth, "[method]connection.implicit-authorization-url"),
            "call": (gateway, "call"),
        }
        for short, (parent, name) in names.items():
            index = instance.get_export_index(store, name, parent)
            func = instance.get_func(store, index) if index is not None else None
            if func is None:
                raise errors.ComponentError(f"the component does not export `{name}` in the {WORLD} world")
            self.funcs[short] = func

    def invoke(self, name: str, *args: Any) -> Any:
        """Calls an export; a trap discards the instance and raises a typed error."""
        if self.broken:
            raise errors.ConnectorTrapError("this connector instance trapped earlier and is discarded")
        _active.host = self.host
        self.store.set_epoch_deadline(self.deadline_ticks)
        try:
            return self.funcs[name](self.store, *args)
        except BaseException as e:
            self.broken = True
            self.host.release_leases()
            failure, self.host.failure = self.host.failure, None
            if failure is not None:
                raise failure from None
            if isinstance(e, wasmtime.WasmtimeError):
                detail = self.host.scrub(str(e))
                if "interrupt" in detail:
                    detail = f"it ran past its deadline of {round(self.deadline * 1000)} ms"
                raise errors.ConnectorTrapError(
                    f"the connector trapped and its instance was discarded: {detail}"
                ) from None
            if isinstance(e, Exception):
                raise errors.ConnectorTrapError(
                    f"the host failed during a connector call ({type(e).__name__}: {self.host.scrub(str(e))})"
                ) from None
            raise
        finally:
            _active.host = None

    def checked(self, name: str, *args: Any) -> Any:
        """Calls an export that returns ``result<T, error>`` and raises its error."""
        value = self.invoke(name, *args)
        if isinstance(value, wc.Variant):
            if value.tag == "ok":
                return value.payload
            if value.tag == "err":
                value = value.payload
            if isinstance(value, wc.Variant):
                raise errors.from_wit(value.tag, value.payload, self.host.scrub)
        return value

    def close(self) -> None:
        """Drops the connection resource and the transport's sockets."""
        if self.handle is not None and not self.broken:
            try:
                _active.host = self.host
                self.handle.drop(self.store)
            except Exception:  # noqa: BLE001
                pass
            finally:
                _active.host = None
        self.handle = None
        self.host.release_leases()
        self.host.transport.close()


def scrubber(secrets: Iterable[Optional[str]]) -> Callable[[str], str]:
    """Replaces each secret (of 4 characters or more) with ``*****``."""
    values = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def scrub(text: str) -> str:
        for secret in values:
            if secret in text:
                text = text.replace(secret, "*****")
        return text

    return scrub
