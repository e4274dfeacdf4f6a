"""core.gcscope: JSON decoded with the collector paused, which runs again (or stays off) after."""

from __future__ import annotations

import gc
import json

import pytest

from core.gcscope import bulk_call, json_loads_bulk

DOC = json.dumps({"items": [{"a": [i, {"b": str(i)}]} for i in range(20000)]})


def test_no_collection_runs_while_decoding_and_the_collector_runs_again_after():
    starts: list[int] = []

    def seen(phase, info):
        if phase == "start":
            starts.append(info["generation"])

    gc.callbacks.append(seen)
    try:
        during: list[int] = []

        def decode():
            data = json.loads(DOC)  # ~40,000 containers: dozens of young collections otherwise
            during.extend(starts)
            return data

        data = bulk_call(decode)
        assert during == []
        assert gc.isenabled()
        assert json_loads_bulk(DOC) == data
        assert any(o is data for o in gc.get_objects())  # tracked, collected like anything else
        json.loads(DOC)
        assert starts  # the comparison: a plain decode of the same document is collected midway
    finally:
        gc.callbacks.remove(seen)
    assert data == json.loads(DOC)


def test_a_disabled_collector_stays_disabled_and_errors_restore_it():
    gc.disable()
    try:
        json_loads_bulk(DOC)
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(ValueError):
        json_loads_bulk("{not json")
    assert gc.isenabled()
    with pytest.raises(ZeroDivisionError):
        bulk_call(lambda: 1 / 0)
    assert gc.isenabled()
