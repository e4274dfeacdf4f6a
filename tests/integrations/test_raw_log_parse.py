"""`parse_raw_log_entries`: the one-path shortcut reads a record as the general path does."""

from __future__ import annotations

from integrations.gitrepo import log
from integrations.gitrepo.log import parse_raw_log_entries

A = "a" * 40
B = "b" * 40
Z = "0" * 40
HEADER = [
    "1" * 40,
    "2" * 40,
    "An",
    "a@x",
    "2024-01-01T00:00:00+00:00",
    "Cn",
    "c@x",
    "2024-01-01T00:00:00+00:00",
]


def _stream(*records: list[str]) -> list[bytes]:
    return [b"".join(b"\x1e" + "\x00".join(r).encode() + b"\x00" for r in records)]


def test_one_path_records_read_as_the_general_parser_reads_them() -> None:
    records = [
        [*HEADER, "msg\n", f"\n:100644 100644 {A} {B} M", "dir/a b\tc.yaml"],
        [*HEADER, "msg\n", f"\n:000000 100644 {Z} {B} A", "new.yaml"],
        [*HEADER, "msg\n", f"\n:100644 120000 {A} {B} T", "link"],
        [*HEADER, "msg\n", f"\n:100644 100644 {A} {B} R100", "old.yaml", "new.yaml"],  # two paths
        [*HEADER, "msg\n", f"\n:100644 100644 {A} {B} M", "x", f":100644 100644 {B} {A} M", "y"],
        [*HEADER, "msg\n"],  # no paths (a merge, an empty commit)
    ]
    fast = list(parse_raw_log_entries(_stream(*records)))
    general = []
    for fields in log._field_lists(_stream(*records)):
        tokens = fields[log._HEADER_FIELDS :]
        if tokens and not tokens[-1]:
            tokens.pop()
        general.append(log._raw_changes(tokens))
    assert [(e.paths, e.raw) for e in fast] == [(p, r if p else {}) for p, r in general]
    assert fast[0].paths == ["dir/a b\tc.yaml"]
    assert fast[0].raw == {"dir/a b\tc.yaml": f":100644 100644 {A} {B} M"}
    assert fast[3].paths == ["new.yaml", "old.yaml"]
