"""Typed access to the ``params`` dict of an RPC request.

Every service handler starts with ``p = Params(params)`` and reads its arguments through the
typed getters below.  A missing key or a value of the wrong type raises ``BadRequest`` with a
message naming the parameter, so handlers never see a ``KeyError`` from a malformed request and
the caller learns exactly what was wrong::

    async def lookup(peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        parent = InodeId(p.int("parent", min=1))
        name = p.bytes("name", max_len=255)
        ...

Conventions:

* ``x(key)`` requires the key; ``opt_x(key, default)`` returns ``default`` when the key is
  missing *or* its value is ``None`` (msgpack ``nil``).
* ``bool`` is never accepted as an int (``True`` is an ``int`` in Python, not on our wire).
* ``bytes`` accepts only msgpack ``bin`` (Python ``bytes``); ``str`` only msgpack ``str``.
* Getters never copy large values: ``bytes`` returns the object received.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any

from dfs.errors import BadRequest

# The getters are named after the builtin types (``p.int("ino")`` reads nicely), which shadows
# those names inside the class body; annotations therefore spell ``builtins.int`` and so on.


def _type_name(value: object) -> builtins.str:
    return "nil" if value is None else type(value).__name__


class Params:
    """Read-only typed view of one request's params; every failure is ``BadRequest``."""

    __slots__ = ("_prefix", "_raw")

    def __init__(self, raw: Any, *, prefix: builtins.str = "") -> None:
        """Wrap ``raw``; ``prefix`` names a nested map in error messages (``"cred."``)."""
        if not isinstance(raw, Mapping):
            what = f"param {prefix.rstrip('.')!r}" if prefix else "params"
            raise BadRequest(f"{what} must be a map, got {_type_name(raw)}")
        self._raw: Mapping[Any, Any] = raw
        self._prefix = prefix

    def _q(self, key: builtins.str) -> builtins.str:
        return repr(self._prefix + key)

    @property
    def raw(self) -> Mapping[Any, Any]:
        """The underlying mapping (for passing through unchanged)."""
        return self._raw

    def __contains__(self, key: object) -> builtins.bool:
        return key in self._raw and self._raw[key] is not None

    def __repr__(self) -> builtins.str:
        return f"Params({sorted(builtins.str(k) for k in self._raw)})"

    # ---- helpers ----
    def _get(self, key: builtins.str) -> Any:
        try:
            value = self._raw[key]
        except KeyError:
            raise BadRequest(f"missing param {self._q(key)}") from None
        if value is None:
            raise BadRequest(f"param {self._q(key)} must not be nil")
        return value

    def _wrong(self, key: builtins.str, expected: builtins.str, value: object) -> BadRequest:
        return BadRequest(f"param {self._q(key)}: expected {expected}, got {_type_name(value)}")

    # ---- scalars ----
    def int(
        self,
        key: builtins.str,
        *,
        min: builtins.int | None = None,
        max: builtins.int | None = None,
    ) -> builtins.int:
        """An integer param, optionally bounded (inclusive)."""
        return self._check_int(key, self._get(key), min, max)

    def opt_int(
        self,
        key: builtins.str,
        default: builtins.int | None = None,
        *,
        min: builtins.int | None = None,
        max: builtins.int | None = None,
    ) -> builtins.int | None:
        value = self._raw.get(key)
        if value is None:
            return default
        return self._check_int(key, value, min, max)

    def _check_int(
        self,
        key: builtins.str,
        value: object,
        lo: builtins.int | None,
        hi: builtins.int | None,
    ) -> builtins.int:
        if not isinstance(value, builtins.int) or isinstance(value, builtins.bool):
            raise self._wrong(key, "int", value)
        if lo is not None and value < lo:
            raise BadRequest(f"param {self._q(key)}: {value} is below the minimum {lo}")
        if hi is not None and value > hi:
            raise BadRequest(f"param {self._q(key)}: {value} is above the maximum {hi}")
        return value

    def float(self, key: builtins.str) -> builtins.float:
        """A float param; ints are accepted and converted."""
        value = self._get(key)
        if isinstance(value, builtins.bool) or not isinstance(
            value, (builtins.int, builtins.float)
        ):
            raise self._wrong(key, "float", value)
        return builtins.float(value)

    def bool(self, key: builtins.str) -> builtins.bool:
        value = self._get(key)
        if not isinstance(value, builtins.bool):
            raise self._wrong(key, "bool", value)
        return value

    def opt_bool(self, key: builtins.str, default: builtins.bool = False) -> builtins.bool:
        value = self._raw.get(key)
        if value is None:
            return default
        if not isinstance(value, builtins.bool):
            raise self._wrong(key, "bool", value)
        return value

    def bytes(self, key: builtins.str, *, max_len: builtins.int | None = None) -> builtins.bytes:
        """A ``bin`` param, optionally limited to ``max_len`` bytes."""
        return self._check_bytes(key, self._get(key), max_len)

    def opt_bytes(
        self,
        key: builtins.str,
        default: builtins.bytes | None = None,
        *,
        max_len: builtins.int | None = None,
    ) -> builtins.bytes | None:
        value = self._raw.get(key)
        if value is None:
            return default
        return self._check_bytes(key, value, max_len)

    def _check_bytes(
        self, key: builtins.str, value: object, max_len: builtins.int | None
    ) -> builtins.bytes:
        if not isinstance(value, builtins.bytes):
            raise self._wrong(key, "bytes", value)
        if max_len is not None and len(value) > max_len:
            raise BadRequest(
                f"param {self._q(key)}: {len(value)} bytes exceeds the limit {max_len}"
            )
        return value

    def str(self, key: builtins.str, *, max_len: builtins.int | None = None) -> builtins.str:
        """A ``str`` param, optionally limited to ``max_len`` characters."""
        return self._check_str(key, self._get(key), max_len)

    def opt_str(
        self,
        key: builtins.str,
        default: builtins.str | None = None,
        *,
        max_len: builtins.int | None = None,
    ) -> builtins.str | None:
        value = self._raw.get(key)
        if value is None:
            return default
        return self._check_str(key, value, max_len)

    def _check_str(
        self, key: builtins.str, value: object, max_len: builtins.int | None
    ) -> builtins.str:
        if not isinstance(value, builtins.str):
            raise self._wrong(key, "str", value)
        if max_len is not None and len(value) > max_len:
            raise BadRequest(
                f"param {self._q(key)}: {len(value)} characters exceeds the limit {max_len}"
            )
        return value

    # ---- containers ----
    def list(self, key: builtins.str) -> builtins.list[Any]:
        """A list param (msgpack array); items are not checked (see ``int_list``)."""
        value = self._get(key)
        if not isinstance(value, builtins.list):
            raise self._wrong(key, "list", value)
        return value

    def opt_list(
        self, key: builtins.str, default: builtins.list[Any] | None = None
    ) -> builtins.list[Any] | None:
        if self._raw.get(key) is None:
            return default
        return self.list(key)

    def int_list(self, key: builtins.str) -> builtins.list[builtins.int]:
        """A list whose every item is an int."""
        items = self.list(key)
        for i, item in enumerate(items):
            if not isinstance(item, builtins.int) or isinstance(item, builtins.bool):
                raise BadRequest(f"param {self._q(key)}[{i}]: expected int, got {_type_name(item)}")
        return items

    def dict(self, key: builtins.str) -> builtins.dict[Any, Any]:
        """A map param, returned as is."""
        value = self._get(key)
        if not isinstance(value, builtins.dict):
            raise self._wrong(key, "map", value)
        return value

    def opt_dict(
        self, key: builtins.str, default: builtins.dict[Any, Any] | None = None
    ) -> builtins.dict[Any, Any] | None:
        if self._raw.get(key) is None:
            return default
        return self.dict(key)

    def sub(self, key: builtins.str) -> Params:
        """A nested map param (for example ``cred``) as a ``Params`` of its own."""
        return Params(self.dict(key), prefix=f"{self._prefix}{key}.")

    def any(self, key: builtins.str) -> Any:
        """A required param of any type except nil."""
        return self._get(key)
