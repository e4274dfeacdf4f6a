"""core.gcscope: a decoded answer held in a scope is not walked by the collector; nothing stays frozen."""

from __future__ import annotations

import gc
import json

from core.gcscope import bulk_scope, json_loads_bulk

DOC = json.dumps({"items": [{"a": [i, {"b": str(i)}]} for i in range(2000)]})


def test_outside_a_scope_it_is_json_loads():
    before = gc.get_freeze_count()
    assert json_loads_bulk(DOC) == json.loads(DOC)
    assert gc.get_freeze_count() == before and gc.isenabled()


def test_in_a_scope_the_decoded_data_is_frozen_until_the_scope_ends():
    assert gc.get_freeze_count() == 0
    with bulk_scope():
        data = json_loads_bulk(DOC)
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
        assert not any(o is data for o in gc.get_objects())  # no generation holds it
        with bulk_scope():  # nested (or another thread's) scope: still frozen when it ends
            json_loads_bulk("[1]")
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
    assert any(o is data for o in gc.get_objects())  # collected normally again


def test_a_process_that_froze_objects_itself_keeps_them_frozen():
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with bulk_scope():
            assert json_loads_bulk(DOC)["items"]
            assert gc.isenabled()
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_a_disabled_collector_stays_disabled():
    gc.disable()
    try:
        with bulk_scope():
            json_loads_bulk(DOC)
            assert not gc.isenabled()
    finally:
        gc.enable()
