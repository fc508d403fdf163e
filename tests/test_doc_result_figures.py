"""Figures the docs copy from a committed result file match that file: the ``bench_ops`` and
``bench_overhead`` tables of the benchmarks page, cell by cell, and the README's transparent-stack row
(forward ratio and date) against ``transparent_init.json``."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _csv_table_after(text: str, marker: str) -> list[list[str]]:
    """The body rows of the first ``csv-table`` after ``marker`` in reST ``text``."""
    start = text.index(".. csv-table::", text.index(marker))
    lines = text[start:].split("\n")[1:]
    body: list[str] = []
    seen_blank = False
    for line in lines:
        if not line.strip():
            if body:
                break
            seen_blank = True
            continue
        if seen_blank:
            if not line.startswith(" "):
                break
            body.append(line.strip())
    reader = csv.reader(io.StringIO("\n".join(body)), skipinitialspace=True)
    return [[c.strip() for c in row] for row in reader]


def bench_ops_table_mismatches(text: str, result: dict) -> list[str]:
    """Cells of the ``bench_ops`` table (the ``**Result, 2026-12-01**`` one) that differ from ``result``, each
    value formatted as the table prints it: medians to 0.1 ms, ratios to 0.01, memory to whole MiB."""
    command = "``python benchmarks/bench_ops.py --out benchmarks/results/bench_ops_cpu.json``"
    rows = _csv_table_after(text, command)
    assert rows, "the bench_ops table was not found"
    bad = []
    for row in rows:
        op = result["ops"][row[0]]
        ours, alternative = op["rows"]
        expected = [
            f"{ours['median_ms']:.1f}",
            f"{alternative['median_ms']:.1f}",
            f"{op['ratio_to_alternative']:.2f}",
            f"{op['paired_ratio_to_alternative']:.2f}",
            f"{ours['peak_rss_growth_mib']:.0f}",
            f"{alternative['peak_rss_growth_mib']:.0f}",
        ]
        pairs = zip(row[1:], expected, strict=True)
        bad += [f"{row[0]}: {shown} (the JSON: {want})" for shown, want in pairs if shown != want]
    return bad


def test_bench_ops_table_check_itself() -> None:
    text = (
        "``python benchmarks/bench_ops.py --out benchmarks/results/bench_ops_cpu.json``\n\n"
        ".. csv-table::\n   :header: a\n\n"
        '   "pool_sum", "66.8", "47.0", "1.42", "1.33", "161", "108"\n\nafter\n'
    )
    op = {
        "ratio_to_alternative": 1.419,
        "paired_ratio_to_alternative": 1.334,
        "rows": [
            {"median_ms": 66.84, "peak_rss_growth_mib": 160.6},
            {"median_ms": 47.01, "peak_rss_growth_mib": 107.4},
        ],
    }
    assert bench_ops_table_mismatches(text, {"ops": {"pool_sum": op}}) == ["pool_sum: 108 (the JSON: 107)"]


def test_bench_ops_table_matches_its_json() -> None:
    text = (ROOT / "docs" / "benchmarks.rst").read_text(encoding="utf-8")
    result = json.loads((RESULTS / "bench_ops_cpu.json").read_text())
    bad = bench_ops_table_mismatches(text, result)
    assert not bad, "the bench_ops table differs from bench_ops_cpu.json:\n" + "\n".join(bad)


def test_readme_transparent_row_matches_its_json() -> None:
    """The README's row of the transparent stack quotes the forward ratio of ``transparent_init.json`` (its
    ``cost.forward_ratio``) and, in a git checkout, the date of the last commit that wrote that file (its
    author date, which a cherry-pick keeps; the JSON records none): a re-run that leaves the README's row
    behind fails here."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("| transparent 1x1-conv stack"))
    ratio = json.loads((RESULTS / "transparent_init.json").read_text())["cost"]["forward_ratio"]
    shown = re.search(r"forward (\d+\.\d+)x a plain", row)
    assert shown is not None, row
    assert shown.group(1) == f"{ratio:.2f}", f"README {shown.group(1)}x, transparent_init.json {ratio:.3f}"
    res = subprocess.run(
        ["git", "log", "-1", "--format=%as", "--", "benchmarks/results/transparent_init.json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0 or not res.stdout.strip():
        pytest.skip("not a git checkout: the result file's date is unknown")
    date = res.stdout.strip()
    measured = row.rstrip(" |").rsplit("|", 1)[1]
    assert date in measured, f"README row dated {measured.strip()!r}, transparent_init.json committed {date}"


def overhead_table_mismatches(text: str, result: dict) -> list[str]:
    """Cells of the ``bench_overhead`` table of the benchmarks page that differ from ``result``: ops forward /
    backward (tiny and typical size), syncs of forward + backward with ``validate=True`` and ``False``,
    allocations and KiB forward / backward of the typical size (``validate=False``; ``-`` where a figure does
    not apply). The rows follow the JSON's op order; the page spells two op names its own way."""
    rows = _csv_table_after(text, "overhead_cpu_20261201_xeon.json``, re-run")
    assert rows, "the bench_overhead table was not found"
    by_key = {(r["op"], r["size"], r["validate"]): r for r in result["rows"]}
    ops = list(dict.fromkeys(r["op"] for r in result["rows"]))

    def pair(row: dict, first: str, second: str, spec: str = "d") -> str:
        return f"{row[first]:{spec}} / " + (f"{row[second]:{spec}}" if second in row else "-")

    def syncs(row: dict | None) -> str:
        return "-" if row is None else str(row["fwd_syncs"] + row.get("bwd_syncs", 0))

    assert len(rows) == len(ops), f"{len(rows)} rows on the page, {len(ops)} ops in the JSON"
    bad = []
    for shown, op in zip(rows, ops, strict=True):
        tiny = by_key.get((op, "tiny", "False")) or by_key[(op, "tiny", "-")]
        typical = by_key.get((op, "typical", "False")) or by_key[(op, "typical", "-")]
        expected = [
            pair(tiny, "fwd_ops", "bwd_ops"),
            pair(typical, "fwd_ops", "bwd_ops"),
            syncs(by_key.get((op, "typical", "True"))),
            syncs(typical),
            str(typical["fwd_allocs"]),
            pair(typical, "fwd_kib", "bwd_kib", ".0f"),
        ]
        bad += [
            f"{shown[0]}: {s} (the JSON: {w})" for s, w in zip(shown[1:], expected, strict=True) if s != w
        ]
    return bad


def test_overhead_table_matches_its_json() -> None:
    text = (ROOT / "docs" / "benchmarks.rst").read_text(encoding="utf-8")
    result = json.loads((RESULTS / "overhead_cpu_20261201_xeon.json").read_text())
    bad = overhead_table_mismatches(text, result)
    assert not bad, "the bench_overhead table differs from overhead_cpu_20261201_xeon.json:\n" + "\n".join(
        bad
    )


def test_overhead_table_check_itself() -> None:
    text = (
        "``overhead_cpu_20261201_xeon.json``, re-run\n\n.. csv-table::\n   :header: a\n\n"
        '   "uniformize", "117 / 11", "132 / 25", "1", "0", "116", "6065 / 2994"\n\nafter\n'
    )
    counts = {"fwd_syncs": 0, "bwd_syncs": 0, "fwd_allocs": 116, "fwd_kib": 6065.2, "bwd_kib": 2993.4}
    rows = [
        {"op": "uniformize", "size": "tiny", "validate": v, "fwd_ops": 117, "bwd_ops": 11, **counts}
        for v in ("True", "False")
    ] + [
        {"op": "uniformize", "size": "typical", "validate": "False", "fwd_ops": 132, "bwd_ops": 25, **counts},
        {"op": "uniformize", "size": "typical", "validate": "True", **counts, "fwd_ops": 1, "fwd_syncs": 1},
    ]
    assert overhead_table_mismatches(text, {"rows": rows}) == [
        "uniformize: 6065 / 2994 (the JSON: 6065 / 2993)"
    ]
