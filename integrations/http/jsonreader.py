"""Parsing at the boundary: `JsonReader`, typed path-aware access to decoded JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NoReturn


class ParseError(ValueError):
    """A JSON document did not have the expected shape; the message names the field."""


def parse_time(value: str, where: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware datetime."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ParseError(f"{where}: not an RFC 3339 timestamp: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise ParseError(f"{where}: timestamp has no UTC offset: {value[:40]!r}")
    return parsed


class JsonReader:
    """Typed, path-aware access to a decoded JSON object; every mismatch raises ParseError."""

    __slots__ = ("_data", "path")

    def __init__(self, data: Any, path: str = "$") -> None:
        if not isinstance(data, dict):
            raise ParseError(f"{path}: expected an object, got {_type_name(data)}")
        self._data: dict[str, Any] = data
        self.path = path

    def _where(self, key: str) -> str:
        return f"{self.path}.{key}"

    def fail(self, key: str, message: str) -> NoReturn:
        """Raise ParseError for `key` with a message."""
        raise ParseError(f"{self._where(key)}: {message}")

    def raw_dict(self) -> dict[str, Any]:
        """Return the underlying decoded object."""
        return self._data

    def has(self, key: str) -> bool:
        """Return True when the key is present and not null."""
        return self._data.get(key) is not None

    def raw(self, key: str) -> Any:
        """Return the raw value (None when absent)."""
        return self._data.get(key)

    def _typed(self, key: str, kind: type | tuple[type, ...], label: str, required: bool) -> Any:
        value = self._data.get(key)
        if value is None:
            if required:
                self.fail(key, "missing")
            return None
        if isinstance(value, bool) and kind is not bool:
            self.fail(key, f"expected {label}, got boolean")
        if not isinstance(value, kind):
            self.fail(key, f"expected {label}, got {_type_name(value)}")
        return value

    def text(self, key: str, default: str = "") -> str:
        """Return an optional string, `default` when absent."""
        value = self._typed(key, str, "string", False)
        return default if value is None else value

    def opt_text(self, key: str) -> str | None:
        """Return a string or None when absent or empty."""
        return self._typed(key, str, "string", False) or None

    def req_text(self, key: str) -> str:
        """Return a required non-empty string."""
        value: str = self._typed(key, str, "string", True)
        if not value:
            self.fail(key, "empty")
        return value

    def integer(self, key: str, default: int | None = None) -> int | None:
        """Return an int (grpc-gateway may encode int64 as a string)."""
        value = self._data.get(key)
        if isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
        result = self._typed(key, int, "integer", False)
        return default if result is None else result

    def req_integer(self, key: str) -> int:
        """Return a required int."""
        value = self.integer(key)
        if value is None:
            self.fail(key, "missing")
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        """Return a boolean, `default` when absent."""
        value = self._typed(key, bool, "boolean", False)
        return default if value is None else value

    def opt_flag(self, key: str) -> bool | None:
        """Return a boolean or None when absent."""
        value: bool | None = self._typed(key, bool, "boolean", False)
        return value

    def num(self, key: str) -> float | None:
        """Return a number or None."""
        value = self._typed(key, (int, float), "number", False)
        return None if value is None else float(value)

    def time(self, key: str) -> datetime | None:
        """Return an aware datetime or None when absent."""
        value = self.opt_text(key)
        return None if value is None else parse_time(value, self._where(key))

    def obj(self, key: str) -> JsonReader:
        """Return a nested object reader; an absent key reads as an empty object."""
        value = self._typed(key, dict, "object", False)
        return JsonReader(value or {}, self._where(key))

    def req_obj(self, key: str) -> JsonReader:
        """Return a required nested object reader."""
        return JsonReader(self._typed(key, dict, "object", True), self._where(key))

    def opt_obj(self, key: str) -> JsonReader | None:
        """Return a nested object reader or None when absent."""
        value = self._typed(key, dict, "object", False)
        return None if value is None else JsonReader(value, self._where(key))

    def array(self, key: str) -> list[Any]:
        """Return a list (empty when absent)."""
        return list(self._typed(key, list, "array", False) or [])

    def objs(self, key: str) -> list[JsonReader]:
        """Return readers for a list of objects."""
        return [JsonReader(item, f"{self._where(key)}[{i}]") for i, item in enumerate(self.array(key))]

    def strs(self, key: str) -> tuple[str, ...]:
        """Return a tuple of strings."""
        items = self.array(key)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise ParseError(f"{self._where(key)}[{i}]: expected string, got {_type_name(item)}")
        return tuple(items)

    def str_map(self, key: str) -> dict[str, str]:
        """Return a string-to-string map (labels, annotations)."""
        value = self._typed(key, dict, "object", False) or {}
        for k, v in value.items():
            if not isinstance(v, str):
                raise ParseError(f"{self._where(key)}.{k}: expected string, got {_type_name(v)}")
        return dict(value)

    def enum(self, key: str, allowed: frozenset[str]) -> str | None:
        """Return a string restricted to `allowed`, or None when absent."""
        value = self.opt_text(key)
        if value is not None and value not in allowed:
            self.fail(key, f"unknown value {value[:60]!r} (expected one of {', '.join(sorted(allowed))})")
        return value


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )
