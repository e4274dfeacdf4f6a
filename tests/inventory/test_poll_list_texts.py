"""The no-change poll recognises items by their text's hash: any change to an item is seen."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from integrations.argocd import (
    ArgoCDClient,
    revision_neutral,
    revision_neutral_proven,
    split_application_list,
)
from inventory.appstate import NARROW_FIELDS, list_text_hash, narrow_change_only
from inventory.models import ArgoApplication
from inventory.poll import instance_poll
from inventory.store import apps_store_revisions, listed_compare, listed_state
from tests.sandbox_fixtures import ARGOCD_TOKEN, commit_files, read_file, set_image_tag

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
    # What a PARSE_VERSION bump does to both stored hashes.
    ArgoApplication.objects.filter(instance=inv.instance).update(
        list_hash="0" * 64, list_neutral_hash="1" * 64
    )
    client = _client(inv)
    listing = client.list_application_texts()
    compared = listed_compare(client=client, listing=listing, stored=listed_state(inv.instance))
    assert len(compared.changed) == len(listing.texts)
    assert instance_poll(instance_id=inv.instance.pk).ok  # state unchanged: only the list hashes move
    after = listed_compare(
        client=client, listing=client.list_application_texts(), stored=listed_state(inv.instance)
    )
    assert not after.changed and len(after.unchanged) == len(listing.texts)


def _settled(inv):
    assert instance_poll(instance_id=inv.instance.pk).ok
    client = _client(inv)
    listing = client.list_application_texts()
    stored = listed_state(inv.instance)
    index = 1
    text = listing.texts[index]
    item = json.loads(text)
    assert stored[item["metadata"]["name"]][2], text[-300:]  # a proven neutral hash was stored with the item
    return client, listing, stored, text, item


def _with(listing, text: bytes, new: dict[str, Any]):
    at = listing.body.index(text)
    body = (
        listing.body[:at] + json.dumps(new, separators=(",", ":")).encode() + listing.body[at + len(text) :]
    )
    return split_application_list(body)


def test_a_change_of_the_sync_revision_alone_is_revision_only(sandbox_inventory):
    inv = sandbox_inventory
    client, listing, stored, text, item = _settled(inv)
    name = item["metadata"]["name"]
    new = json.loads(text)
    new["status"]["sync"]["revision"] = "ab" * 20
    changed_listing = _with(listing, text, new)
    compared = listed_compare(client=client, listing=changed_listing, stored=stored)
    assert not compared.changed
    assert compared.revision_only == {name: ("ab" * 20, list_text_hash(changed_listing.texts[1]))}
    assert len(compared.unchanged) == len(listing.texts)

    row = ArgoApplication.objects.get(instance=inv.instance, name=name)
    assert apps_store_revisions(instance=inv.instance, revisions=compared.revision_only) == 1
    after = ArgoApplication.objects.get(instance=inv.instance, name=name)
    assert after.revision == "ab" * 20 and after.hashed_revision == row.revision
    assert after.list_hash == compared.revision_only[name][1]
    assert (after.state_hash, after.list_neutral_hash, after.last_changed_at, after.sync_status) == (
        row.state_hash,
        row.list_neutral_hash,
        row.last_changed_at,
        row.sync_status,
    )
    # The same text is now unchanged; a later narrow change is still told from the stored hash.
    again = listed_compare(client=client, listing=changed_listing, stored=listed_state(inv.instance))
    assert not again.changed and not again.revision_only
    remote = client.parse_list_item(new, 1)
    values = dict(
        ArgoApplication.objects.filter(pk=row.pk).values(
            "state_hash", "hashed_revision", "is_multi_source", *NARROW_FIELDS
        )[0]
    )
    assert narrow_change_only(dataclasses.replace(remote, health_status="Degraded"), values)
    values["hashed_revision"] = ""
    assert not narrow_change_only(dataclasses.replace(remote, health_status="Degraded"), values)


def test_a_revision_change_with_any_other_change_is_a_full_change(sandbox_inventory):
    inv = sandbox_inventory
    client, listing, stored, text, item = _settled(inv)
    item["status"]["sync"]["revision"] = "cd" * 20
    seen = 0
    for path, grow in _mutations(item):
        if path == ("status", "sync", "revision"):
            continue
        new = _changed(item, path, grow)
        compared = listed_compare(client=client, listing=_with(listing, text, new), stored=stored)
        assert [entry[3] for entry in compared.changed] == [(new.get("metadata") or {}).get("name")], path
        assert not compared.revision_only, path
        seen += 1
    assert seen > 30


@pytest.mark.parametrize(
    "sync",
    [
        {"revision": "AB" * 20, "status": "Synced"},  # not lower-case hex
        {"revision": "ab" * 32, "status": "Synced"},  # not 40 characters
        {"revision": "", "status": "Synced"},
        {"revision": "ab" * 20, "revisions": ["ab" * 20, "cd" * 20], "status": "Synced"},  # multi-source
        {"revision": "ab" * 20, "status": "Synced"},  # another order than the stored item's
        {"revision": {"sha": "ab" * 20}, "status": "Synced"},
    ],
)
def test_an_unexpected_sync_shape_takes_the_full_path(sandbox_inventory, sync):
    inv = sandbox_inventory
    client, listing, stored, text, item = _settled(inv)
    new = json.loads(text)
    new["status"]["sync"] = {**sync}
    compared = listed_compare(client=client, listing=_with(listing, text, new), stored=stored)
    assert [entry[3] for entry in compared.changed] == [item["metadata"]["name"]]
    assert not compared.revision_only


def test_a_revision_span_that_is_not_the_sync_revision_is_never_proven():
    # No status.sync.revision: the scan finds the operation's, which the proof rejects.
    item = {
        "metadata": {"name": "a"},
        "status": {
            "operationState": {"operation": {"sync": {"revision": "ab" * 20}}},
            "sync": {"status": "Synced"},
        },
    }
    text = json.dumps(item, separators=(",", ":")).encode()
    neutral, start, revision = revision_neutral(text)
    assert revision == "ab" * 20 and text[start : start + 40] == b"ab" * 20
    assert not revision_neutral_proven(item, neutral)
    # The same revision in both places: only the status's span is proven.
    item["status"]["sync"]["revision"] = "ab" * 20
    text = json.dumps(item, separators=(",", ":")).encode()
    neutral, start, _ = revision_neutral(text)
    assert revision_neutral_proven(item, neutral) and text.rindex(b"ab" * 20) == start
    item["status"] = {"sync": {"revision": "ab" * 20}, "operationState": item["status"]["operationState"]}
    text = json.dumps(item, separators=(",", ":")).encode()
    neutral, start, _ = revision_neutral(text)  # the last span is the operation's: not proven
    assert not revision_neutral_proven(item, neutral)
    assert revision_neutral(text.replace(b"ab" * 20, b"AB" * 20)) is None


def test_the_first_changed_item_is_handed_over_once_as_soon_as_it_is_hashed(sandbox_inventory):
    inv = sandbox_inventory
    client, listing, stored, text, _ = _settled(inv)
    seen: list[bytes] = []
    listed_compare(client=client, listing=listing, stored=stored, on_first_change=seen.append)
    assert seen == []  # nothing changed: never called
    new = json.loads(text)
    new["status"]["sync"]["revision"] = "ab" * 20
    changed = _with(listing, text, new)
    second = json.loads(changed.texts[2])
    second["status"]["sync"]["revision"] = "ab" * 20
    changed = _with(changed, changed.texts[2], second)
    compared = listed_compare(client=client, listing=changed, stored=stored, on_first_change=seen.append)
    assert len(compared.revision_only) == 2
    assert seen == [changed.texts[1]]


def test_a_changed_item_starts_fetching_its_new_commit(sandbox_inventory, monkeypatch):
    import inventory.poll as poll

    inv = sandbox_inventory
    _, _, _, text, item = _settled(inv)
    wanted: list[dict[str, set[str]]] = []
    monkeypatch.setattr(poll, "repositories_prefetch", lambda w: wanted.append(w) or [])
    new = json.loads(text)
    new["status"]["sync"]["revision"] = "ab" * 20
    poll.ingest_ahead(json.dumps(new).encode())
    url = item["spec"]["source"]["repoURL"].removesuffix(".git")
    assert len(wanted) == 1 and "ab" * 20 in wanted[0][url]
    poll.ingest_ahead(b'{"metadata": ')  # not an item: no fetch, no error
    assert len(wanted) == 1 or wanted[1] == {}


def test_a_poll_that_sees_a_new_commit_fetches_it_ahead_of_storing(sandbox_inventory, monkeypatch):
    import inventory.poll as poll

    inv = sandbox_inventory
    assert instance_poll(instance_id=inv.instance.pk).ok
    started: list[dict[str, set[str]]] = []
    real = poll.repositories_prefetch
    monkeypatch.setattr(poll, "repositories_prefetch", lambda w: started.append(w) or real(w))
    assert instance_poll(instance_id=inv.instance.pk).ok
    assert started == []  # nothing changed
    app = inv.repo.apps[0].name
    path = f"environments/dev/{app}/kustomization.yaml"
    head = commit_files(inv.repo.path, {path: set_image_tag(read_file(inv.repo.path, path), "8.8.8")}, "ci\n")
    inv.refresh()  # Argo CD follows the head and syncs dev; nothing ingested it (no webhook here)
    assert instance_poll(instance_id=inv.instance.pk).ok
    assert any(head in shas for w in started for shas in w.values())


def test_the_list_leaves_the_sync_result_out_and_the_state_hash_ignores_it(sandbox_inventory):
    from integrations.argocd import DEFAULT_LIST_FIELDS
    from inventory.appstate import state_hash

    inv = sandbox_inventory
    assert not any(f.startswith("items.status.operationState.operation") for f in DEFAULT_LIST_FIELDS)
    client = _client(inv)
    listing = client.list_application_texts()
    items = [json.loads(t) for t in listing.texts]
    assert items and not any("operation" in (i["status"].get("operationState") or {}) for i in items)
    # A watched app (which carries its sync result) hashes like the listed one.
    name = items[1]["metadata"]["name"]
    full = client.get_application(name)
    assert full.sync_result_revision and full.sync_result_resource_counts
    listed = client.parse_list_item(items[1], 1)
    bare = dataclasses.replace(
        full, sync_result_revision=None, sync_result_revisions=(), sync_result_resource_counts=()
    )
    assert state_hash(full) == state_hash(bare)
    assert listed.sync_result_revision is None and state_hash(listed) != ""
