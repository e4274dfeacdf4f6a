"""core.durations: the one duration format of pages, reports and insight."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.durations import format_duration


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ""),
        (-5, "0 s"),
        (timedelta(seconds=-90), "0 s"),
        (0, "0 s"),
        (0.4, "< 1 s"),
        (14, "14 s"),
        (59.9, "59 s"),  # truncated: never longer than it was
        (60, "1 min"),
        (200, "3 min 20 s"),
        (timedelta(minutes=45), "45 min"),
        (timedelta(hours=1), "1 h"),
        (timedelta(hours=4, minutes=5, seconds=59), "4 h 5 min"),
        (timedelta(hours=2, seconds=30), "2 h"),  # the second unit is minutes, and it is zero
        (timedelta(days=1), "1 d"),
        (timedelta(days=3, hours=4, minutes=30), "3 d 4 h"),
        (timedelta(days=400), "400 d"),
    ],
)
def test_format_duration(value, expected):
    assert format_duration(value) == expected


def test_insight_shows_durations_in_the_same_format():
    from insight import views

    assert views._duration(4 * 3600 + 5 * 60) == "4 h 5 min"
    assert views._duration(None) == "—"
