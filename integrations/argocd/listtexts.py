"""An application list answer cut into its items' JSON texts, decoded only where asked.

A poller that remembers each app's last list item by the hash of its text needs nothing else of
an unchanged item: `split_application_list` finds the items of the answer's top-level `items`
array without decoding them (10,000 apps, 18 MB: ~15 ms against ~115 ms to decode and ~40 ms to
free the decoded list), and `ApplicationListTexts.decoded` decodes the ones the caller did not
recognise.

How the cut stays exact. Items are cut where an object ends and the next one, whose first key is
`metadata`, begins (`}` `,` `{"metadata":`, any JSON whitespace between): inside a JSON string a
`"` is always escaped, so such a boundary only occurs between values, never in a string. Argo CD
writes every Application with `metadata` first (Go's encoder: struct order, and sorted keys once
`fields` has filtered the list). A boundary could still lie inside an item (an array of objects
starting with `metadata` somewhere in it); then the texts on either side of it are not complete
JSON values. So a text is accepted only when it is complete: either byte for byte a text that was
accepted before (the caller's hash of it), or decoded here into an object. The answer around the
array (its `metadata`, `resourceVersion`) is decoded with a placeholder in the array, which
proves that the cut array is the top-level `items`. When any of this fails, `redecoded()` decodes
the whole answer as JSON (raising the usual malformed-answer error when it is not valid) and
re-encodes each item canonically: slower, never wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from core.gcscope import bulk_call, json_loads_bulk
from integrations.http import JsonReader, ParseError

_ITEMS_OPEN = re.compile(rb'"items"[ \t\n\r]*:[ \t\n\r]*\[[ \t\n\r]*')
_BOUNDARY = re.compile(rb'\}[ \t\n\r]*,[ \t\n\r]*(?=\{[ \t\n\r]*"metadata"[ \t\n\r]*:)')
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class ApplicationListTexts:
    """The items of an application list as JSON texts (UTF-8), in list order."""

    texts: tuple[bytes, ...]
    resource_version: str | None
    body: bytes  # the whole answer, for `redecoded`
    canonical: bool = False  # texts re-encoded from a whole decode (`redecoded`)

    def decoded(self, indexes: Iterable[int]) -> dict[int, dict[str, Any]] | None:
        """Decode these items; None when one of them is not a complete JSON object (see module doc)."""
        wanted = list(indexes)
        texts = self.texts
        try:
            values = bulk_call(lambda: [json.loads(texts[i]) for i in wanted])
        except ValueError:
            return None
        if not all(isinstance(v, dict) for v in values):
            return None
        return dict(zip(wanted, values, strict=True))

    def redecoded(self) -> ApplicationListTexts:
        """Decode the whole answer; each item's text is then its canonical re-encoding.

        Raises ValueError (body not JSON) or ParseError (not an application list).
        """
        data = json_loads_bulk(self.body.decode("utf-8"))
        r = JsonReader(data)
        items = r.array("items")
        if not all(isinstance(item, dict) for item in items):
            r.objs("items")  # says which item is wrong
        texts = tuple(json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode() for item in items)
        version = r.obj("metadata").opt_text("resourceVersion")
        return ApplicationListTexts(texts=texts, resource_version=version, body=self.body, canonical=True)


def split_application_list(body: bytes) -> ApplicationListTexts:
    """Cut an application list answer into its items' texts (undecoded); see the module doc.

    When the answer cannot be cut (not an object with a top-level `items` array of objects
    starting with `metadata`), it is decoded whole instead (`redecoded`).
    """
    whole = ApplicationListTexts(texts=(), resource_version=None, body=body)
    start = _array_start(body)
    if start is None:
        return whole.redecoded()
    boundaries = list(_BOUNDARY.finditer(body, start))
    cuts = [m.start() + 1 for m in boundaries]
    starts = [start, *(m.end() for m in boundaries)]
    last = _value_end(body, starts[-1])
    if last is None:
        return whole.redecoded()
    if last == starts[-1]:  # `[]`: no item at all
        texts: tuple[bytes, ...] = ()
    else:
        texts = tuple(body[a:b] for a, b in zip(starts, [*cuts, last], strict=True))
    version = _outer_version(body[:start] + b"0" + body[last:])
    if version is False:
        return whole.redecoded()
    return ApplicationListTexts(texts=texts, resource_version=version, body=body)  # type: ignore[arg-type]


def _array_start(body: bytes) -> int | None:
    match = _ITEMS_OPEN.search(body)
    return match.end() if match else None


def _value_end(body: bytes, start: int) -> int | None:
    """Return where the JSON value at `start` ends (`start` itself before a `]`), None if none does."""
    if body[start : start + 1] == b"]":
        return start
    try:
        tail = body[start:].decode("utf-8")
        _, end = _DECODER.raw_decode(tail)
    except ValueError:
        return None
    return start + len(tail[:end].encode("utf-8"))


def _outer_version(outer: bytes) -> str | bool | None:
    """The answer around the cut array, its items replaced by one `0`: its resourceVersion.

    False when it is not an object whose top-level `items` is exactly that placeholder.
    """
    try:
        data = json.loads(outer)
        if not isinstance(data, dict) or data.get("items") != [0]:
            return False
        return JsonReader(data).obj("metadata").opt_text("resourceVersion")
    except (ValueError, ParseError):
        return False


# An item's `status.sync.revision` as the list's `fields` filter writes it: a `sync` object with
# `revision` first, or after `status` (Argo CD re-encodes the filtered item as a map, keys sorted:
# `"sync":{"revision":…,"status":…}`, the last member of `status`). A 40-hex commit only.
_SYNC_REVISION = re.compile(rb'"sync":\{(?:"status":"[A-Za-z]*",)?"revision":"([0-9a-f]{40})"')
REVISION_PLACEHOLDER = "x" * 40


def revision_neutral(text: bytes) -> tuple[bytes, int, str] | None:
    """Return the item's text with its sync revision replaced by a placeholder, where, and that revision.

    The span is found by a scan (the last match of `_SYNC_REVISION`), not proven here: the caller
    proves it on a decoded item (`revision_neutral_proven`). Two texts with the same neutral text
    and the same span differ only in those 40 hex characters: when the span of one of them was
    proven to be its status.sync.revision, the other differs from it only in that revision.
    None when there is no such span.
    """
    match = None
    for match in _SYNC_REVISION.finditer(text):  # noqa: B007 - the last one
        pass
    if match is None:
        return None
    start, end = match.span(1)
    return text[:start] + REVISION_PLACEHOLDER.encode() + text[end:], start, match.group(1).decode()


def revision_neutral_proven(item: dict[str, Any], neutral: bytes) -> bool:
    """Tell whether `neutral` decodes to `item` with only its status.sync.revision replaced.

    Then the span `revision_neutral` replaced is exactly that revision (no other member; a
    multi-source `revisions`, which the list's `fields` do not ask for, is not handled).
    """
    status = item.get("status")
    sync = status.get("sync") if isinstance(status, dict) else None
    if not isinstance(sync, dict) or "revisions" in sync or not isinstance(sync.get("revision"), str):
        return False
    expected = {**item, "status": {**status, "sync": {**sync, "revision": REVISION_PLACEHOLDER}}}  # type: ignore[dict-item]
    try:
        return bool(json.loads(neutral) == expected)
    except ValueError:
        return False
