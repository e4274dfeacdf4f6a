"""Reads for the insight pages: DORA inputs, drift and exceptions, in a constant number of queries.

Rooms: `dora` (the DORA report and its inputs), `drift` (OutOfSync applications), `exceptions`
(changes that bypassed the normal path).
"""

from insight.selectors.dora import (
    DEFAULT_COUNTS,
    MAX_COUNTS,
    REVERT_Q,
    SHA_RE,
    DoraFilters,
    DoraInputs,
    dora_inputs,
    dora_report,
    failure_window,
)
from insight.selectors.drift import DriftGroup, drift_argo_app_get, drift_overview
from insight.selectors.exceptions import EXCEPTION_KINDS, ExceptionReport, ExceptionRow, exceptions_list

__all__ = [
    "DEFAULT_COUNTS",
    "EXCEPTION_KINDS",
    "MAX_COUNTS",
    "REVERT_Q",
    "SHA_RE",
    "DoraFilters",
    "DoraInputs",
    "DriftGroup",
    "ExceptionReport",
    "ExceptionRow",
    "dora_inputs",
    "dora_report",
    "drift_argo_app_get",
    "drift_overview",
    "exceptions_list",
    "failure_window",
]
