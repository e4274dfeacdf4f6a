"""The results table (printed and written as Markdown with the machine it ran on)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Row:
    figure: str
    measure: str
    value: str
    reference: str = "—"
    ratio: str = "—"
    target: str = "—"
    verdict: str = "—"  # "met", "MISSED: ...", "not measured: ...", "—" (no target)


@dataclass
class Section:
    key: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def row(self, measure: str, value: str, **kw: str) -> Row:
        r = Row(self.title, measure, value, **kw)
        self.rows.append(r)
        return r

    def note(self, text: str) -> None:
        self.notes.append(text)


def verdict(ok: bool, miss: str) -> str:
    return "met" if ok else f"MISSED: {miss}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(
    sections: list[Section], machine: dict[str, str], args: str, total_seconds: float, smoke: bool
) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench`): every figure next to its reference measured in the",
        "same run on the same machine, so the ratio holds on a noisy machine. Regenerate with `make bench`;",
        "sizes are parameters (`python -m bench --help`).",
        "",
        f"Run: {now}, `{('python -m bench ' + args).strip()}`"
        + f", {total_seconds / 60:.1f} min in total"
        + (" (SMOKE run: tiny sizes, not the reference figures)" if smoke else "")
        + ".",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    out += [f"| {_cell(k)} | {_cell(v)} |" for k, v in machine.items()]
    out += [
        "",
        "## Results",
        "",
        "| # | figure | measure | value | reference (same run) | ratio | target | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in sections:
        for r in s.rows:
            out.append(
                f"| {s.key} | {_cell(r.figure)} | {_cell(r.measure)} | {_cell(r.value)} | "
                f"{_cell(r.reference)} | {_cell(r.ratio)} | {_cell(r.target)} | {_cell(r.verdict)} |"
            )
    out += ["", "## Notes", ""]
    for s in sections:
        out.append(f"**{s.key}. {s.title}** ({s.seconds:.0f} s of bench time)")
        out.append("")
        out += [f"- {n}" for n in s.notes] or ["- (none)"]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def render_text(sections: list[Section]) -> str:
    rows = [("#", "measure", "value", "reference", "ratio", "target", "verdict")]
    for s in sections:
        for r in s.rows:
            rows.append(
                (s.key, f"{r.figure}: {r.measure}", r.value, r.reference, r.ratio, r.target, r.verdict)
            )
    widths = [min(max(len(r[i]) for r in rows), 60) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        lines.append("  ".join(c[:60].ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
