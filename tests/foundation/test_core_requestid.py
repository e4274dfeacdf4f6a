"""core.requestid: the id a request, its log lines and its tasks share."""

from __future__ import annotations

import logging

from core.requestid import current_request_id, new_request_id, set_request_id
from gitopsportal.logging import RequestIdFilter


def test_request_ids_are_fresh_and_settable():
    first, second = new_request_id(), new_request_id()
    assert first != second and len(first) == 32
    set_request_id(first)
    try:
        assert current_request_id() == first
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
        RequestIdFilter().filter(record)
        assert record.request_id == first
    finally:
        set_request_id(None)
    assert current_request_id() is None
