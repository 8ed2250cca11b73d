"""A bulk path for ``list<u8>`` in wasmtime-py 50's component values.

wasmtime-py converts a ``list<u8>`` one element at a time: each byte becomes
a ``wasmtime_component_val_t`` (32 bytes) built or read through ctypes, which
costs microseconds per byte, i.e. milliseconds for an ordinary response body.
The element array is plain memory, so the same values can be written and read
with one ``memmove``/``string_at`` and strided slices. This replaces the two
conversion methods of ``ListType`` for byte lists only (other lists keep the
library's code), after checking the struct layout it relies on; if the layout
is not the expected one, nothing is replaced.
"""

from __future__ import annotations

import ctypes
from typing import Any

_installed = False


def install() -> bool:
    """Installs the bulk conversions once; returns whether they are in place."""
    global _installed
    if _installed:
        return True
    try:
        from wasmtime import _ffi as ffi
        from wasmtime.component import _types
    except ImportError:
        return False
    val_t: Any = getattr(ffi, "wasmtime_component_val_t", None)
    union_t: Any = getattr(ffi, "wasmtime_component_valunion_t", None)
    list_kind: Any = getattr(ffi, "WASMTIME_COMPONENT_LIST", None)
    u8_kind: Any = getattr(ffi, "WASMTIME_COMPONENT_U8", None)
    list_type: Any = getattr(_types, "ListType", None)
    if None in (val_t, union_t, list_kind, u8_kind, list_type) or not hasattr(list_type, "_is_bytes"):
        return False
    if val_t.kind.size != 1 or union_t.u8.size != 1:
        return False
    stride = ctypes.sizeof(val_t)
    kind_at = val_t.kind.offset
    byte_at = val_t.of.offset + union_t.u8.offset
    u8 = bytes([u8_kind.value])
    library_to_c = list_type.convert_to_c
    library_from_c = list_type.convert_from_c

    def convert_to_c(self: Any, store: Any, val: Any, ptr: Any) -> None:
        if not isinstance(val, (bytes, bytearray, memoryview)) or not self._is_bytes():
            return library_to_c(self, store, val, ptr)
        data = bytes(val)
        raw = ffi.wasmtime_component_vallist_t()
        ffi.wasmtime_component_vallist_new_uninit(raw, len(data))
        if data:
            image = bytearray(len(data) * stride)
            image[kind_at::stride] = u8 * len(data)
            image[byte_at::stride] = data
            # Copied straight from the bytearray's buffer: a bytes() copy of the
            # image first (32 bytes a byte) cost more than all the rest.
            ctypes.memmove(raw.data, (ctypes.c_char * len(image)).from_buffer(image), len(image))
        ptr.contents.kind = list_kind
        ptr.contents.of.list = raw
        return None

    def convert_from_c(self: Any, c: Any) -> Any:
        if c.kind != list_kind.value or not self._is_bytes():
            return library_from_c(self, c)
        values = c.of.list
        try:
            if values.size == 0:
                return b""
            address = ctypes.cast(values.data, ctypes.c_void_p).value or 0
            return ctypes.string_at(address, values.size * stride)[byte_at::stride]
        finally:
            ffi.wasmtime_component_vallist_delete(ctypes.byref(values))

    list_type.convert_to_c = convert_to_c
    list_type.convert_from_c = convert_from_c
    _installed = True
    return True
