"""The no-change poll recognises items by their text's hash: any change to an item is seen."""

from __future__ import annotations

import json
from typing import Any

import pytest

from integrations.argocd import ArgoCDClient, split_application_list
from inventory.models import ArgoApplication
from inventory.poll import instance_poll
from inventory.store import listed_compare, listed_state
from tests.sandbox_fixtures import ARGOCD_TOKEN

pytestmark = pytest.mark.django_db


def _client(inv) -> ArgoCDClient:
    return ArgoCDClient(inv.argocd.base_url, ARGOCD_TOKEN, allow_http=True)


def _mutations(value: Any, path: tuple = ()):
    """Every single-field change of a decoded item: each leaf altered, each object and array grown."""
    if isinstance(value, dict):
        yield (*path, "+key"), lambda v: v.__setitem__("addedByTest", "x")
        for key, child in value.items():
            yield from _mutations(child, (*path, key))
    elif isinstance(value, list):
        yield (*path, "+item"), lambda v: v.append("x")
        for i, child in enumerate(value):
            yield from _mutations(child, (*path, i))
    else:
        yield path, None


def _changed(item: dict[str, Any], path: tuple, grow) -> dict[str, Any]:
    """A copy of `item` with the one change `_mutations` named."""
    new = json.loads(json.dumps(item))
    target = new
    for key in path[:-1]:
        target = target[key]
    if grow is not None:  # path ends with "+key" / "+item": target is the object or array
        grow(target)
        return new
    old = target[path[-1]]
    if isinstance(old, bool):
        target[path[-1]] = not old
    elif isinstance(old, int | float):
        target[path[-1]] = old + 1
    elif isinstance(old, str):
        target[path[-1]] = old + "x"
    else:
        target[path[-1]] = "x"
    return new


def test_a_change_in_any_field_of_an_item_is_seen(sandbox_inventory):
    inv = sandbox_inventory
    assert instance_poll(instance_id=inv.instance.pk).ok  # settled: the stored hashes are this list's
    client = _client(inv)
    listing = client.list_application_texts()
    stored = listed_state(inv.instance)
    same = listed_compare(client=client, listing=listing, stored=stored)
    assert not same.changed and len(same.unchanged) == len(listing.texts) > 3

    index = 1
    text = listing.texts[index]
    item = json.loads(text)
    name = item["metadata"]["name"]
    at = listing.body.index(text)
    seen = 0
    for path, grow in _mutations(item):
        new = _changed(item, path, grow)
        body = (
            listing.body[:at]
            + json.dumps(new, separators=(",", ":")).encode()
            + listing.body[at + len(text) :]
        )
        compared = listed_compare(client=client, listing=split_application_list(body), stored=stored)
        changed = [entry[3] for entry in compared.changed]
        assert changed == [(new.get("metadata") or {}).get("name")], path
        assert name not in compared.unchanged or path[:2] == ("metadata", "name"), path
        assert len(compared.unchanged) == len(listing.texts) - 1, path
        seen += 1
    assert seen > 30  # every leaf of a real list item, and every object and array in it


def test_items_stored_under_an_older_hash_are_parsed_once_then_recognised(sandbox_inventory):
    inv = sandbox_inventory
    ArgoApplication.objects.filter(instance=inv.instance).update(list_hash="0" * 64)
    client = _client(inv)
    listing = client.list_application_texts()
    compared = listed_compare(client=client, listing=listing, stored=listed_state(inv.instance))
    assert len(compared.changed) == len(listing.texts)
    assert instance_poll(instance_id=inv.instance.pk).ok  # state unchanged: only the list hashes move
    after = listed_compare(
        client=client, listing=client.list_application_texts(), stored=listed_state(inv.instance)
    )
    assert not after.changed and len(after.unchanged) == len(listing.texts)
