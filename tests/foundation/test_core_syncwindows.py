"""Argo CD sync windows (core.syncwindows): active, assigned, CanSync and the next opening."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.syncwindows import (
    SyncWindowError,
    next_opening,
    sync_allowed,
    window_active,
    window_assigned,
    window_validate,
)

NOW = datetime(2026, 12, 5, 19, 20, 30, tzinfo=UTC)  # a Saturday


def test_a_deny_window_opens_when_its_duration_ends():
    deny = {"kind": "deny", "schedule": "20 19 * * *", "duration": "5m"}
    assert window_active(deny, NOW) and not sync_allowed([deny], NOW)
    assert next_opening([deny], NOW) == datetime(2026, 12, 5, 19, 25, tzinfo=UTC)
    assert sync_allowed([deny], NOW + timedelta(minutes=5))


def test_manual_syncs_pass_a_deny_window_only_with_manual_sync():
    deny = {"kind": "deny", "schedule": "* * * * *", "duration": "1h"}
    assert not sync_allowed([deny], NOW, manual=True)
    assert sync_allowed([{**deny, "manualSync": True}], NOW, manual=True)
    assert not sync_allowed([{**deny, "manualSync": True}], NOW)


def test_allow_windows_open_at_their_schedule_in_their_time_zone():
    allow = {"kind": "allow", "schedule": "0 9 * * 1-5", "duration": "8h", "timeZone": "Europe/Berlin"}
    # Saturday evening: the next allow window is Monday 09:00 in Berlin (08:00 UTC in winter).
    assert next_opening([allow], NOW) == datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


def test_overlapping_windows_open_when_every_deny_ended():
    windows = [
        {"kind": "deny", "schedule": "15 19 * * *", "duration": "10m"},
        {"kind": "deny", "schedule": "20 19 * * *", "duration": "30m"},
    ]
    assert next_opening(windows, NOW) == datetime(2026, 12, 5, 19, 50, tzinfo=UTC)


def test_a_yearly_freeze_opens_after_it_and_a_never_opening_one_gives_none():
    freeze = {"kind": "deny", "schedule": "0 0 24 12 *", "duration": "72h"}
    assert next_opening([freeze], datetime(2026, 12, 25, tzinfo=UTC)) == datetime(2026, 12, 27, tzinfo=UTC)
    always = {"kind": "deny", "schedule": "* * * * *", "duration": "1h"}
    assert next_opening([always], NOW, horizon=timedelta(days=2)) is None


def test_windows_are_assigned_by_their_globs():
    window = {"kind": "deny", "clusters": ["prod-*"], "namespaces": ["payments-*"]}
    assert window_assigned(window, app="ledger-prod-eu", namespace="x", cluster="prod-eu-west-1", server="")
    assert not window_assigned(
        {**window, "andOperator": True}, app="a", namespace="x", cluster="prod-eu-west-1", server=""
    )
    assert not window_assigned({"kind": "deny"}, app="a", namespace="n", cluster="c", server="s")


@pytest.mark.parametrize(
    "window",
    [
        {"kind": "maybe", "schedule": "* * * * *", "duration": "1h"},
        {"kind": "deny", "schedule": "* * * *", "duration": "1h"},
        {"kind": "deny", "schedule": "61 * * * *", "duration": "1h"},
        {"kind": "deny", "schedule": "* * * * *", "duration": "1 hour"},
        {"kind": "deny", "schedule": "* * * * *", "duration": "1h", "timeZone": "Mars/Olympus"},
    ],
)
def test_windows_argo_cd_would_refuse_are_refused(window):
    with pytest.raises(SyncWindowError):
        window_validate(window)
