"""Cutting an application list into its items' texts: exact, or decoded whole when it cannot be."""

from __future__ import annotations

import json

import pytest

from integrations.argocd import ArgoCDClient, ArgoCDResponseError, split_application_list

ITEMS = [
    {"metadata": {"name": "a", "labels": {"name": "x"}}, "spec": {"project": "p"}, "status": {}},
    {"metadata": {"name": "b"}, "status": {"summary": {"images": ["r/b:1", "r/c:ü"]}}},
    {"metadata": {"name": "c"}, "note": '},{"metadata": no split in a string'},
]


def _answer(items, *, indent=None, separators=None, items_first=False) -> bytes:
    outer = {"metadata": {"resourceVersion": "42"}, "items": items}
    if items_first:
        outer = {"items": items, "metadata": outer["metadata"]}
    return json.dumps(outer, indent=indent, separators=separators, ensure_ascii=False).encode()


@pytest.mark.parametrize(
    "layout",
    [
        {"separators": (",", ":")},  # Go's encoder (Argo CD)
        {},  # ", " and ": "
        {"indent": 2},
        {"separators": (",", ":"), "items_first": True},  # a map re-encoded with sorted keys
    ],
)
def test_each_item_text_is_exactly_that_item(layout):
    listing = split_application_list(_answer(ITEMS, **layout))
    assert not listing.canonical  # cut, not decoded
    assert listing.resource_version == "42"
    assert [json.loads(t) for t in listing.texts] == ITEMS
    assert listing.decoded([0, 2]) == {0: ITEMS[0], 2: ITEMS[2]}


def test_an_empty_list_has_no_texts():
    listing = split_application_list(b'{"metadata":{"resourceVersion":"7"},"items":[]}')
    assert listing.texts == () and listing.resource_version == "7"
    assert split_application_list(b'{"metadata":{}}').texts == ()


@pytest.mark.parametrize("first", [True, False])
def test_a_boundary_inside_an_item_is_never_taken_for_one(first):
    nested = {"metadata": {"name": "a"}, "x": [{"metadata": 1}, {"metadata": 2}]}
    items = [nested, {"metadata": {"name": "b"}}] if first else [{"metadata": {"name": "b"}}, nested]
    listing = split_application_list(_answer(items, separators=(",", ":")))
    # Either the answer could not be cut (decoded whole), or a text is incomplete, which decoding
    # it says: the caller then decodes the answer whole. An incomplete text is never an item.
    if not listing.canonical:
        assert listing.decoded(range(len(listing.texts))) is None
        listing = ArgoCDClient("http://127.0.0.1:9", "t", allow_http=True).list_texts_redecoded(listing)
    assert listing.canonical
    assert [json.loads(t) for t in listing.texts] == items


def test_an_items_key_elsewhere_is_not_the_list():
    body = b'{"metadata":{"items":[{"metadata":1}]},"items":[{"metadata":{"name":"z"}}]}'
    listing = split_application_list(body)
    assert [json.loads(t) for t in listing.texts] == [{"metadata": {"name": "z"}}]


def test_malformed_answers_raise_as_malformed():
    client = ArgoCDClient("http://127.0.0.1:9", "t", allow_http=True)
    with pytest.raises(ArgoCDResponseError, match="not valid JSON"):
        client._list_texts(lambda: split_application_list(b'{"items":[{"metadata":{}}, {"metadata": }]}'))
    with pytest.raises(ArgoCDResponseError, match=r"items\[0\]: expected an object"):
        client._list_texts(lambda: split_application_list(b'{"items":[1,2]}'))
    with pytest.raises(ArgoCDResponseError, match="expected an object"):
        client._list_texts(lambda: split_application_list(b"[1]"))
    one = split_application_list(b'{"items":[1]}')  # cut, but its text is no object
    assert one.decoded([0]) is None
    with pytest.raises(ArgoCDResponseError, match=r"items\[0\]"):
        client.list_texts_redecoded(one)
