"""Component types read once, not on every call, in wasmtime-py 50.

wasmtime-py rebuilds a function's whole type tree through ctypes on every
call: ``Func.__call__`` asks for the export's type, an import's callback
wraps the type it is handed, and every record, variant, list, option and
result asks the C API for its fields or cases again each time a value of it
is converted (80 value types built and dropped per ``gateway.call``, and
five ``_tagged`` walks over variant cases). In a profile of ``users/me`` calls
that was most of the time the host spent outside ``requests`` and the
component.

A component type cannot change once made, so its parts can be kept:

* the properties and helpers that walk a type (``fields``, ``cases``,
  ``element``, ``elements``, ``payload``, ``ok``, ``err``, ``params``,
  ``result``, ``_tagged``, ``_is_bytes``) remember their answer on the type
  object that computed it;
* ``Func.type`` remembers the export's type on the ``Func`` (one per export
  per instance here);
* :func:`add_func` registers an import like ``LinkerInstance.add_func`` but
  with a callback that reads the import's type on its first call and keeps it.

Conversions themselves are the library's (and _fastbytes' for byte lists). If
an internal this relies on is missing (another wasmtime), :func:`install`
replaces nothing and :func:`add_func` calls the library's ``add_func``.
"""

from __future__ import annotations

import ctypes
import inspect
from typing import Any, Callable, Dict, List, Optional, Tuple

_installed = False

# Properties and methods without arguments whose answer depends only on the type.
_MEMOIZED = {
    "FuncType": ("params", "result"),
    "ListType": ("element", "_is_bytes"),
    "RecordType": ("fields",),
    "TupleType": ("elements",),
    "VariantType": ("cases", "_cases", "_tagged"),
    "OptionType": ("payload", "_cases", "_tagged"),
    "ResultType": ("ok", "err", "_cases", "_tagged"),
    "EnumType": ("names",),
    "FlagsType": ("names",),
}


def _remember(name: str, compute: Callable[[Any], Any]) -> Callable[[Any], Any]:
    slot = f"_ionflow_{name}"

    def remembered(self: Any) -> Any:
        try:
            return self.__dict__[slot]
        except KeyError:
            value = self.__dict__[slot] = compute(self)
            return value

    remembered.__name__ = getattr(compute, "__name__", name)
    remembered.__doc__ = getattr(compute, "__doc__", None)
    return remembered


def install() -> bool:
    """Makes the type walks remember their answers, once; returns whether they do."""
    global _installed
    if _installed:
        return True
    try:
        from wasmtime.component import _func, _types
    except ImportError:
        return False
    plan: List[Tuple[type, str, Any]] = []
    for class_name, members in _MEMOIZED.items():
        cls = getattr(_types, class_name, None)
        if cls is None:
            return False
        for member in members:
            # Found on the class or a base (``_tagged`` is VariantLikeType's); set on the class.
            current = inspect.getattr_static(cls, member, None)
            if isinstance(current, property) and current.fget is not None:
                plan.append((cls, member, property(_remember(member, current.fget))))
            elif callable(current):
                plan.append((cls, member, _remember(member, current)))
            else:
                return False
    func_cls = getattr(_func, "Func", None)
    func_type = getattr(func_cls, "type", None)
    if func_cls is None or not callable(func_type):
        return False

    def type_once(self: Any, store: Any) -> Any:
        try:
            return self.__dict__["_ionflow_type"]
        except KeyError:
            value = self.__dict__["_ionflow_type"] = func_type(self, store)
            return value

    for cls, member, replacement in plan:
        setattr(cls, member, replacement)
    func_cls.type = type_once
    _installed = True
    return True


# -- imports ---------------------------------------------------------------------

_Signature = Tuple[List[Any], Optional[Any]]
#: An import's parameter types and result type, by its handle in the library's FUNCTIONS slab.
_signatures: Dict[int, _Signature] = {}
_callback: Any = None


def _make_callback() -> Any:
    """The C callback for imports: the library's ``func_impl``, with the types kept."""
    from wasmtime import _ffi as ffi
    from wasmtime.component import _linker
    from wasmtime.component._enter import catch_exceptions
    from wasmtime.component._types import FuncType

    functions = _linker.FUNCTIONS

    @ffi.wasmtime_component_func_callback_t  # type: ignore[misc]
    def func_impl(idx, context, ty_raw, args, nargs, results, nresults):  # type: ignore[no-untyped-def]
        def run(store: Any) -> None:
            key = idx or 0
            signature = _signatures.get(key)
            if signature is None:
                # The type handed in is borrowed for this call; the value types read
                # from it are copies of their own, which may outlive it.
                with FuncType._from_ptr(ty_raw, owner=store) as fty:
                    signature = _signatures[key] = ([ty for _, ty in fty.params], fty.result)
            param_tys, result_ty = signature
            if len(param_tys) != nargs or nresults != (0 if result_ty is None else 1):
                raise ValueError("an import was called with a signature other than its own")
            func = functions.get(key)
            pyargs = [ty.convert_from_c(args[i]) for i, ty in enumerate(param_tys)]
            result = func(store, *pyargs)
            if result_ty is None:
                if result is not None:
                    raise ValueError("an import without a result returned a value")
            else:
                result_ty.convert_to_c(store, result, results)

        return catch_exceptions(context, run)

    return func_impl


def add_func(instance: Any, name: str, func: Callable[..., Any]) -> None:
    """``instance.add_func(name, func)``, with the import's type read once (see the module)."""
    global _callback
    try:
        from wasmtime import _ffi as ffi
        from wasmtime.component import _linker
        finalize = _linker.func_finalize
        functions = _linker.FUNCTIONS
        if _callback is None:
            _callback = _make_callback()
    except (ImportError, AttributeError):
        instance.add_func(name, func)
        return
    from wasmtime import WasmtimeError

    instance._assert_not_locked()
    name_bytes = name.encode("utf-8")
    name_buf = ctypes.create_string_buffer(name_bytes)
    idx = functions.allocate(func)
    error = ffi.wasmtime_component_linker_instance_add_func(
        instance.ptr(), name_buf, len(name_bytes), _callback, idx, finalize
    )
    if error:
        raise WasmtimeError._from_ptr(error)
