"""Read the configuration YAML: nodes that know their file, line and key, and value checks.

Every error is a `ConfigError` already formatted as one line naming the file, the line and the key.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured
from ruamel.yaml.comments import CommentedMap, CommentedSeq

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ImproperlyConfigured):
    """A configuration problem, already formatted as one line."""


class ConfigNode:
    """Wrap one YAML value with its dotted path, line and file, to read it and name it in errors."""

    def __init__(self, value: Any, path: str, line: int | None, source: str) -> None:
        self.value = value
        self.path = path
        self.line = line
        self.source = source

    def fail(self, message: str, key: str | None = None, line: int | None = None) -> ConfigError:
        where = f"{self.path}.{key}" if key and self.path else (key or self.path or "(top level)")
        at = line if line is not None else self.line
        prefix = f"{self.source} line {at}" if at is not None else self.source
        return ConfigError(f"{prefix}: {where}: {message}")

    def _line_of(self, key: str) -> int | None:
        if isinstance(self.value, CommentedMap):
            try:
                return int(self.value.lc.value(key)[0]) + 1
            except (KeyError, TypeError, AttributeError):
                try:
                    return int(self.value.lc.key(key)[0]) + 1
                except (KeyError, TypeError, AttributeError):
                    return self.line
        return self.line

    def mapping(self, allowed: tuple[str, ...]) -> ConfigNode:
        if not isinstance(self.value, dict):
            raise self.fail("must be a mapping")
        for key in self.value:
            if not isinstance(key, str) or key not in allowed:
                raise self.fail(
                    f"unknown key (expected one of: {', '.join(allowed)})", str(key), self._key_line(key)
                )
        return self

    def _key_line(self, key: Any) -> int | None:
        try:
            return int(self.value.lc.key(key)[0]) + 1
        except (KeyError, TypeError, AttributeError):
            return self.line

    def child(self, key: str) -> ConfigNode | None:
        if key not in self.value or self.value[key] is None:
            return None
        path = f"{self.path}.{key}" if self.path else key
        return ConfigNode(self.value[key], path, self._line_of(key), self.source)

    def items(self) -> list[ConfigNode]:
        if not isinstance(self.value, list):
            raise self.fail("must be a list")
        nodes = []
        for i, item in enumerate(self.value):
            line = self.line
            if isinstance(self.value, CommentedSeq):
                with contextlib.suppress(KeyError, TypeError, AttributeError, IndexError):
                    line = int(self.value.lc.item(i)[0]) + 1
            nodes.append(ConfigNode(item, f"{self.path}[{i}]", line, self.source))
        return nodes

    # -- typed getters ------------------------------------------------------------------------

    def _scalar(self, key: str) -> tuple[Any, int | None] | None:
        if key not in self.value or self.value[key] is None:
            return None
        return self.value[key], self._line_of(key)

    def string(
        self, key: str, default: str | None = None, *, required: bool = False, secret: bool = False
    ) -> str:
        found = self._scalar(key)
        if found is None:
            if required:
                raise self.fail("is required", key)
            return default if default is not None else ""
        value, line = found
        if not isinstance(value, str):
            raise self.fail("must be a string", key, line)
        value = interpolate(value, lambda msg: self.fail(msg, key, line), secret=secret)
        if required and not value.strip():
            raise self.fail("must not be empty", key, line)
        return value

    def boolean(self, key: str, default: bool) -> bool:
        found = self._scalar(key)
        if found is None:
            return default
        value, line = found
        if isinstance(value, str):
            value = interpolate(value, lambda msg: self.fail(msg, key, line)).strip().lower()
            if value in ("true", "yes", "on", "1"):
                return True
            if value in ("false", "no", "off", "0"):
                return False
        if not isinstance(value, bool):
            raise self.fail("must be true or false", key, line)
        return value

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        found = self._scalar(key)
        if found is None:
            return default
        value, line = found
        if isinstance(value, str):
            value = interpolate(value, lambda msg: self.fail(msg, key, line)).strip()
            if not value.lstrip("-").isdigit():
                raise self.fail("must be an integer", key, line)
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail("must be an integer", key, line)
        if value < minimum:
            raise self.fail(f"must be at least {minimum}", key, line)
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        found = self._scalar(key)
        if found is None:
            return ()
        value, line = found
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail("must be a list of strings", key, line)
        return tuple(value)

    def line_of(self, key: str) -> int | None:
        return self._line_of(key)


def interpolate(value: str, fail: Any, *, secret: bool = False) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        env = os.environ.get(name)
        if env not in (None, ""):
            return env
        if default is not None:
            return default
        raise fail(f"environment variable {name} is not set (use ${{{name}:-default}})")

    return _INTERPOLATION.sub(replace, value)


def token_read(node: ConfigNode, *, required: bool) -> str:
    """Read exactly one of token / token_file / token_env without ever echoing the value."""
    given = [k for k in ("token", "token_file", "token_env") if node.child(k) is not None]
    if len(given) > 1:
        raise node.fail("give only one of token, token_file, token_env", given[1], node.line_of(given[1]))
    if not given:
        if required:
            raise node.fail("is required (or token_file / token_env)", "token")
        return ""
    key = given[0]
    if key == "token":
        return node.string("token", secret=True).strip()
    if key == "token_file":
        path = node.string("token_file")
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise node.fail(
                f"cannot read {path!r}: {exc.strerror}", "token_file", node.line_of("token_file")
            ) from None
    name = node.string("token_env")
    value = os.environ.get(name, "").strip()
    if not value and required:
        raise node.fail(
            f"environment variable {name} is empty or not set", "token_env", node.line_of("token_env")
        )
    return value


def url_check(node: ConfigNode, key: str, url: str, *, allow_http: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise node.fail("must be an http(s) URL", key, node.line_of(key))
    if parts.scheme == "http" and not allow_http:
        raise node.fail("plain http needs allow_http: true", key, node.line_of(key))
    if parts.username or parts.password:
        raise node.fail(
            "must not embed credentials (use token / token_file / token_env)", key, node.line_of(key)
        )


def slug_read(node: ConfigNode, key: str = "name") -> str:
    value = node.string(key, required=True)
    if not _SLUG.fullmatch(value):
        raise node.fail("must be lowercase letters, digits and '-' (at most 63)", key, node.line_of(key))
    return value


def plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def unique_check(node: ConfigNode, values: list[str], key: str) -> None:
    seen: set[str] = set()
    for item, value in zip(node.items(), values, strict=True):
        if value in seen:
            raise item.fail(f"duplicate {value!r}", key, item.line_of(key))
        seen.add(value)
