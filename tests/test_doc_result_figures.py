"""Figures the docs copy from a committed result file match that file: the ``bench_ops`` and
``bench_overhead`` tables of the benchmarks page, cell by cell, the uniformization page's per-run tables
and setup range against their ``bench_uniformize_cpu_*.json`` (and its ``scatter`` over ``sparse`` ranges
against every run of each day), the soft-association page's benchmark table against
``soft_20261201_xeon.json``, the README's transparent-stack row (forward ratio and date) against
``transparent_init.json``, the H200 speed-up over the paper's encoder (README and benchmarks page) against
``gpu_check_cuda_20261204_h200.json``, and the ablation page's tables and intervals against the per-seed
rows of the committed ``ablation.json`` runs. The machine and date in a result file's name, by which the docs
cite it, are those the file records."""

from __future__ import annotations

import ast
import csv
import io
import json
import math
import re
import statistics
import subprocess
from pathlib import Path

import pytest
import torch

from tests.transparent_init._reference import SOLVE_SLACK
from transparent_init._affine import MIN_ABS_FRACTION, REALIZE_SLACK

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _flat(*parts: str) -> str:
    """A file of the repository (``README.md``, a docs page) with its line breaks and runs of spaces folded to
    one space."""
    return " ".join(ROOT.joinpath(*parts).read_text(encoding="utf-8").split())


def _result(name: str) -> dict:
    """The committed result file ``benchmarks/results/<name>``, parsed."""
    return json.loads((RESULTS / name).read_text())


def _readme_line(prefix: str) -> str:
    """The line of the README (a table row) that starts with ``prefix``."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return next(line for line in readme.splitlines() if line.startswith(prefix))


def _assert_quotes(text: str, want: list[str], where: str) -> None:
    """Every string of ``want`` (the figures computed from their source, worded as the page words them)
    occurs in ``text``; the failure lists the ones missing from ``where``."""
    missing = [w for w in want if w not in text]
    assert not missing, f"{where} lacks {missing}"


def _range(values: list[float], digits: int = 2) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}x"


def _sci(value: float) -> str:
    """``7.7e-7`` as the pages print a figure (two significant digits, no leading 0 in the exponent)."""
    return f"{value:.1e}".replace("e-0", "e-").replace("e+0", "e+")


#: scipy.stats.t.ppf(0.975, 9): the 95 % interval of the mean of 10 paired differences.
T_975_9 = 2.262157162798205


def _paired_interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean, sample standard deviation and the half-width of the 95 % t interval of 10 paired differences,
    as the ablation page computes them by hand."""
    assert len(diffs) == 10, diffs
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    return mean, sd, T_975_9 * sd / math.sqrt(len(diffs))


#: The input ranges r of the transparent-init page's tables (inputs uniform in [-r, r]).
TRANSPARENT_RANGES = ("1", "10", "100", "1000")


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


#: The text just before the first ``bench_ops`` table (the ``**Result, 2026-12-01**`` one).
BENCH_OPS_FIRST = "``python benchmarks/bench_ops.py --out benchmarks/results/bench_ops_cpu.json``"


def bench_ops_table_mismatches(
    text: str, result: dict, marker: str = BENCH_OPS_FIRST, memory: str = "peak_rss_growth_mib"
) -> list[str]:
    """Cells of the ``bench_ops`` table after ``marker`` that differ from ``result``, each value formatted as
    the table prints it: medians to 0.1 ms, ratios to 0.01, memory (the field ``memory``) to whole MiB."""
    rows = _csv_table_after(text, marker)
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
            f"{ours[memory]:.0f}",
            f"{alternative[memory]:.0f}",
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


@pytest.mark.parametrize(
    ("marker", "name", "memory"),
    [
        (BENCH_OPS_FIRST, "bench_ops_cpu.json", "peak_rss_growth_mib"),
        (
            "``benchmarks/results/bench_ops_cpu_20261206_f26_epyc.json``, every check",
            "bench_ops_cpu_20261206_f26_epyc.json",
            "peak_rss_growth_mib",
        ),
        (
            "``benchmarks/results/bench_ops_cpu_20261206_f26_fair_epyc.json``, every check",
            "bench_ops_cpu_20261206_f26_fair_epyc.json",
            "peak_rss_growth_mib",
        ),
        (  # the tensor bytes live at once (the tables before: the resident-set growth)
            "``benchmarks/results/bench_ops_cpu_20261206_f26_tensors_epyc.json``, every check",
            "bench_ops_cpu_20261206_f26_tensors_epyc.json",
            "peak_tensor_mib",
        ),
    ],
)
def test_bench_ops_table_matches_its_json(marker: str, name: str, memory: str) -> None:
    text = (ROOT / "docs" / "benchmarks.rst").read_text(encoding="utf-8")
    result = _result(name)
    bad = bench_ops_table_mismatches(text, result, marker, memory)
    assert not bad, f"the bench_ops table differs from {name}:\n" + "\n".join(bad)


def test_readme_transparent_row_matches_its_json() -> None:
    """The README's row of the transparent stack quotes the forward ratio of ``transparent_init.json`` (its
    ``cost.forward_ratio``), the identity error at inputs in [-10, 10] with the paper's figure beside it and,
    in a git checkout, the date of the last commit that wrote that file (its
    author date, which a cherry-pick keeps; the JSON records none): a re-run that leaves the README's row
    behind fails here."""
    row = _readme_line("| transparent 1x1-conv stack")
    result = _result("transparent_init.json")
    ratio = result["cost"]["forward_ratio"]
    shown = re.search(r"forward (\d+\.\d+)x a plain", row)
    assert shown is not None, row
    assert shown.group(1) == f"{ratio:.2f}", f"README {shown.group(1)}x, transparent_init.json {ratio:.3f}"
    # the identity error at inputs in [-10, 10]: table3's median of ours_relu, against paper_table3's figure
    ours, paper = result["table3"]["ours_relu"]["10"]["median"], result["paper_table3"]["10"]
    want = f"identity to {_sci(ours)} ({paper / ours:.0f}x below the paper's {_sci(paper)})"
    assert want in row, f"README: {want!r} expected in {row!r}"
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
    result = _result("overhead_cpu_20261201_xeon.json")
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


#: The uniformization page's per-run tables: the text just before each table, and its result file.
UNIFORMIZE_TABLES = [
    ("bench_uniformize_cpu_20261206_f26_epyc.json``, load", "bench_uniformize_cpu_20261206_f26_epyc.json"),
    ("bench_uniformize_cpu_20261202_epyc.json``, load", "bench_uniformize_cpu_20261202_epyc.json"),
    ("bench_uniformize_cpu_20261201_xeon.json``;", "bench_uniformize_cpu_20261201_xeon.json"),
    ("bench_uniformize_cpu_20261201_epyc.json``, load", "bench_uniformize_cpu_20261201_epyc.json"),
    (
        "bench_uniformize_cpu_20261130_xeon_rss_reset.json``;",
        "bench_uniformize_cpu_20261130_xeon_rss_reset.json",
    ),
    ("(``benchmarks/results/bench_uniformize_cpu_20261130.json``", "bench_uniformize_cpu_20261130.json"),
]


def uniformize_table_mismatches(text: str, marker: str, result: dict) -> list[str]:
    """Cells of the uniformization page's table after ``marker`` that differ from ``result``: floor and op
    forward+backward (ms), paired x floor, paper / this with our setup (where the table has that column) and
    without it, setup (ms) and peak extra memory over the floor's."""
    rows = _csv_table_after(text, marker)
    assert len(rows) == len(result["configs"]), (
        f"{marker}: {len(rows)} rows, {len(result['configs'])} configs"
    )
    bad = []
    for row, config in zip(rows, result["configs"], strict=True):
        r = config["results"]
        floor, op, paper = r["floor"], r["scatter"], r["paper_coo"]
        expected = [
            f"{config['config']['N_s']}, {config['config']['labels']}",
            f"{floor['fwd_bwd_ms']:.0f}",
            f"{op['fwd_bwd_ms']:.0f}",
            f"{op['paired_x_floor']:.2f}",
        ]
        if len(row) == 8:
            expected.append(f"{op['paper_over_this']:.1f}")
        expected += [
            f"{paper['fwd_bwd_ms'] / op['fwd_bwd_ms']:.1f}",
            f"{op['setup_ms']:.0f}",
            f"{op['peak_extra_mb'] / floor['peak_extra_mb']:.2f}",
        ]
        pairs = zip(row, expected, strict=True)
        bad += [
            f"{row[0]}: {shown} (the JSON: {want})" for shown, want in pairs if shown.lower() != want.lower()
        ]
    return bad


@pytest.mark.parametrize(("marker", "name"), UNIFORMIZE_TABLES)
def test_uniformize_tables_match_their_json(marker: str, name: str) -> None:
    text = (ROOT / "docs" / "concepts" / "uniformization.rst").read_text(encoding="utf-8")
    bad = uniformize_table_mismatches(text, marker, _result(name))
    assert not bad, f"the uniformization table of {name} differs from it:\n" + "\n".join(bad)


def test_uniformize_table_check_itself() -> None:
    text = (
        "run.json``;\n\n.. csv-table::\n   :header: a\n\n"
        '   "256, grid", "43", "82", "1.82", "4.8", "32", "1.16"\n\nafter\n'
    )
    config = {
        "config": {"N_s": 256, "labels": "grid"},
        "results": {
            "floor": {"fwd_bwd_ms": 43.6, "peak_extra_mb": 204.0},
            "scatter": {"fwd_bwd_ms": 82.4, "paired_x_floor": 1.82, "setup_ms": 31.6, "peak_extra_mb": 236.4},
            "paper_coo": {"fwd_bwd_ms": 397.0},
        },
    }
    assert uniformize_table_mismatches(text, "run.json``;", {"configs": [config]}) == [
        "256, grid: 43 (the JSON: 44)"
    ]


def test_uniformize_setup_range_matches_the_committed_runs() -> None:
    """The setup time the page gives for the current code (it sorts the ids) spans the ``scatter`` setups of
    every committed ``bench_uniformize_cpu_<date>.json`` run since the bounded-chain code of 2026-11-30."""
    text = _flat("docs", "concepts", "uniformization.rst")
    shown = re.search(
        r"sorts the ids in its setup \((\d+)-(\d+) ms in the committed runs since 2026-11-30", text
    )
    assert shown is not None, "the setup range was not found"
    setups = [
        c["results"]["scatter"]["setup_ms"]
        for path in sorted(RESULTS.glob("bench_uniformize_cpu_2026*.json"))
        for c in json.loads(path.read_text())["configs"]
    ]
    assert len(setups) >= 45
    assert (shown.group(1), shown.group(2)) == (f"{min(setups):.0f}", f"{max(setups):.0f}")


def test_uniformize_sparse_speedups_match_the_committed_runs() -> None:
    """The page's ranges of "``scatter`` is N-Mx faster than ``sparse``" (forward+backward), one per day,
    span the ratios of every committed ``bench_uniformize_cpu*.json`` run of that day (the date its ``meta``
    records) that timed ``sparse``: the range quoted for 2026-12-01 was the AMD EPYC run's alone (4.8-5.7x),
    where the Intel Xeon run of that day gave 4.0-4.6x."""
    text = _flat("docs", "concepts", "uniformization.rst")
    start = text.index('On CPU it is ``"scatter"`` from the benchmark below')
    paragraph = text[start : text.index("with about half the extra memory", start)]
    shown = {
        date: (low, high)
        for low, high, date in re.findall(
            r"(\d+\.\d)-(\d+\.\d)x (?:faster than ``\"sparse\"`` forward\+backward in the current result "
            r"\(|on |in the )(\d{4}-\d\d-\d\d)",
            paragraph,
        )
    }
    ratios: dict[str, list[float]] = {}
    for path in RESULTS.glob("bench_uniformize_cpu*.json"):
        run = json.loads(path.read_text())
        for config in run["configs"]:
            r = config["results"]
            if "sparse" in r:
                ratios.setdefault(run["meta"]["time"][:10], []).append(
                    r["sparse"]["fwd_bwd_ms"] / r["scatter"]["fwd_bwd_ms"]
                )
    want = {date: (f"{min(v):.1f}", f"{max(v):.1f}") for date, v in ratios.items()}
    assert len(want) >= 4
    assert shown == want, f"the page: {shown}, the JSON files: {want}"


def test_uniformize_first_runs_name_their_medians_of_fewer_runs() -> None:
    """The 2026-11-26 section gives its times as medians of the run's ``--repeats`` (15) runs;
    ``bench_uniformize`` times its slow variants (``SLOW``) and the setup with half as many (7, at least 3),
    and the page names each slow variant the run has (it said 15 runs for every variant)."""
    text = _flat("docs", "concepts", "uniformization.rst")
    section = text[text.index("2026-11-26: the previous implementation") :]
    shown = re.search(
        r"medians of (\d+) runs after a warm-up \((\d+) for the slow ([^)]*), and for the setup\)", section
    )
    assert shown is not None, "the 2026-11-26 section does not say how many runs each median is of"
    source = (ROOT / "benchmarks" / "bench_uniformize.py").read_text(encoding="utf-8")
    slow = next(
        ast.literal_eval(node.value)
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["SLOW"]
    )
    run = _result("bench_uniformize_cpu.json")
    repeats = run["meta"]["repeats"]
    variants = {v for config in run["configs"] for v in config["results"]}
    assert (int(shown.group(1)), int(shown.group(2))) == (repeats, max(3, repeats // 2))
    assert set(re.findall(r"``(\w+)``", shown.group(3))) == variants & set(slow)


def test_uniformize_first_run_slow_phases_match_its_json() -> None:
    """The two figures of the 2026-11-26 run said to be hit by a slow phase, and what the page sets against
    them, are ``bench_uniformize_cpu.json``'s: the floor's subprocess at ``N_s = 1024`` (the op's "x floor"
    there) and the op's at 16384, against the sweep and the paired runs of that subprocess (whose op median,
    the floor's median times the ratio of medians these runs recorded, was 109 ms: the page read "84-88 ms in
    the paired runs")."""
    text = _flat("docs", "concepts", "uniformization.rst")
    shown = re.search(
        r"the floor's subprocess at ``N_s = 1024`` \((\d+) ms, hence \"x floor\" (\d\.\d\d)\) and the op's "
        r"at ``N_s = 16384`` \((\d+) ms, against (\d+) ms in the sweep of the same run; the paired runs "
        r"inside that subprocess were slowed alike, the op (\d+) ms against a floor of (\d+) ms\)",
        text,
    )
    assert shown is not None, "the slow-phase sentence of the 2026-11-26 run was not found"
    run = _result("bench_uniformize_cpu.json")
    by = {(c["config"]["N_s"], c["config"]["labels"]): c["results"] for c in run["configs"]}
    floor, op = by[(1024, "grid")]["floor"], by[(16384, "grid")]["scatter"]
    sweep = next(r for r in run["sweep"]["rows"] if (r["N_s"], r["labels"]) == (16384, "grid"))
    want = [
        f"{floor['fwd_bwd_ms']:.0f}",
        f"{by[(1024, 'grid')]['scatter']['x_floor']:.2f}",  # the op's, over that slow floor
        f"{op['fwd_bwd_ms']:.0f}",
        f"{sweep['fwd_bwd_ms']:.0f}",
        f"{op['paired_floor_ms'] * op['paired_x_floor']:.0f}",
        f"{op['paired_floor_ms']:.0f}",
    ]
    assert list(shown.groups()) == want


def test_uniformize_complexity_table_sizes_follow_its_formulas() -> None:
    """The last column of the uniformization page's complexity table (B=4, L=21, 512 x 512, float32, in
    decimal units as its 90 GB and 88 MB are) is what the table's own formulas give: the scatter backend's two
    int64 indices ``2 B N_p`` are 16.8 MB (it read 16 MB, their size in MiB)."""
    from sparse_ops._layout import lanes_for

    text = (ROOT / "docs" / "concepts" / "uniformization.rst").read_text(encoding="utf-8")
    rows = {row[0]: row[-1] for row in _list_table_after(text, "Complexity and memory\n-----")}
    b, ch, n_p, k = 4, 21, 512 * 512, 128

    def scatter(n_s: int) -> str:
        accumulators = b * ch * (lanes_for(n_p, n_s) * n_s + 1 + n_p // k) * 4
        return f"{2 * b * n_p * 8 / 1e6:.0f} MB + {accumulators / 1e6:.0f} MB"

    want = {
        "dense broadcast (per-class masks)": f"{b * ch * 1024 * n_p * 4 / 1e9:.0f} GB / "
        f"{b * ch * 16384 * n_p * 4 / 1e12:.1f} TB",
        "dense one-hot ``bmm``": f"{b * 1024 * n_p * 4 / 1e9:.1f} GB / {b * 16384 * n_p * 4 / 1e9:.1f} GB",
        '``"scatter"`` (default)': f"{scatter(1024)} / {scatter(16384)}",
    }
    assert {name: rows.get(name) for name in want} == want


def _list_table_after(text: str, marker: str) -> list[list[str]]:
    """The rows of the first ``list-table`` after ``marker`` in reST ``text`` (header row included), each a
    list of its cells' text."""
    start = text.index(".. list-table::", text.index(marker))
    rows: list[list[str]] = []
    for line in text[start:].split("\n")[1:]:
        if line.startswith("   * - "):
            rows.append([line[len("   * - ") :].strip()])
        elif line.startswith("     - ") and rows:
            rows[-1].append(line[len("     - ") :].strip())
        elif line.strip() and not line.startswith("   :"):
            break
    return rows


def soft_table_mismatches(text: str, result: dict) -> list[str]:
    """Cells of the soft-association page's benchmark table (block, 9-shift and scatter per ``C``) that differ
    from ``result``'s ``soft`` rows, as the table prints them: median ms, ratio to ``block`` and the memory
    figure (the tensor peak where the row has one, else the resident-set growth)."""
    rows = _list_table_after(text, "Benchmark\n---------")
    assert rows and rows[0][0] == "C", "the soft benchmark table was not found"
    by = {(r["impl"], r["C"]): r for r in result["soft"]["rows"]}
    bad = []
    for row in rows[1:]:
        c = int(row[0])
        for shown, impl in zip(row[1:], ("block", "nine_shift", "scatter"), strict=True):
            r = by[(impl, c)]
            mem = r.get("peak_tensor_mib", r.get("peak_rss_growth_mib"))
            want = f"{r['median_ms']:.0f} ms ({r['ratio_to_block']:.2f}x, {mem:.0f} MiB)"
            if shown != want:
                bad.append(f"C={c} {impl}: {shown} (the JSON: {want})")
    return bad


def test_soft_table_matches_its_json() -> None:
    text = (ROOT / "docs" / "concepts" / "soft_association.rst").read_text(encoding="utf-8")
    name = "soft_20261206_f26_tensors_epyc.json"
    assert f"figures from ``benchmarks/results/{name}``" in " ".join(text.split())
    result = _result(name)
    bad = soft_table_mismatches(text, result)
    assert not bad, f"the soft benchmark table differs from {name}:\n" + "\n".join(bad)


def test_soft_table_check_itself() -> None:
    text = (
        "Benchmark\n---------\n\n.. list-table:: t\n   :header-rows: 1\n\n   * - C\n     - block\n"
        "     - 9-shift\n     - scatter\n   * - 2\n     - 99 ms (1.00x, 197 MiB)\n"
        "     - 322 ms (3.24x, 519 MiB)\n     - 373 ms (3.75x, 606 MiB)\n\nafter\n"
    )
    rows = [
        {"impl": "block", "C": 2, "median_ms": 99.546, "ratio_to_block": 1.0, "peak_rss_growth_mib": 196.9},
        {
            "impl": "nine_shift",
            "C": 2,
            "median_ms": 322.4,
            "ratio_to_block": 3.239,
            "peak_rss_growth_mib": 518.9,
        },
        {
            "impl": "scatter",
            "C": 2,
            "median_ms": 373.1,
            "ratio_to_block": 3.748,
            "peak_rss_growth_mib": 605.7,
        },
    ]
    assert soft_table_mismatches(text, {"soft": {"rows": rows}}) == [
        "C=2 block: 99 ms (1.00x, 197 MiB) (the JSON: 100 ms (1.00x, 197 MiB))"
    ]


def _csv_table_titled(text: str, title: str) -> list[list[str]]:
    """The body rows of the ``csv-table`` whose title is exactly ``title``."""
    start = text.index(f".. csv-table:: {title}\n")
    return _csv_table_after(text[start:], ".. csv-table::")


def _pm(values: list[float], signed: bool = False) -> str:
    """Mean ± sample std of ``values`` (fractions) in points, as the ablation's tables print them."""
    mean, std = statistics.mean(values), statistics.stdev(values)
    return (f"{100 * mean:+.1f}" if signed else f"{100 * mean:.1f}") + f" ± {100 * std:.1f}"


def ablation_table_mismatches(text: str, result: dict, summary_title: str, paired_title: str) -> list[str]:
    """Cells of the ablation page's two tables of one run (mean ± std per init; paired differences to
    ``transparent`` with the wins) that differ from the figures recomputed from the run's per-seed
    ``rows``."""
    runs: dict[str, dict[int, dict]] = {}
    for r in result["rows"]:
        runs.setdefault(r["init"], {})[int(r["seed"])] = r
    ref = runs["transparent"]

    def values(init: str, key: str, minus: dict[int, dict] | None = None) -> list[float]:
        def get(row: dict) -> float:
            return row["boundary_miou"]["3"] if key == "boundary" else row[key]

        return [get(runs[init][s]) - (get(minus[s]) if minus else 0.0) for s in sorted(runs[init])]

    bad = []
    rows = _csv_table_titled(text, summary_title)
    assert [r[0] for r in rows] == list(runs), (
        f"{summary_title}: rows {[r[0] for r in rows]}, JSON {list(runs)}"
    )
    for row in rows:
        init = row[0]
        expected = [str(len(runs[init]))] + [_pm(values(init, k)) for k in ("step0_miou", "miou", "boundary")]
        bad += [f"{init}: {s} (the JSON: {w})" for s, w in zip(row[1:], expected, strict=True) if s != w]
    rows = _csv_table_titled(text, paired_title)
    assert [r[0] for r in rows] == [i for i in runs if i != "transparent"], paired_title
    for row in rows:
        init = row[0]
        diffs = values(init, "miou", ref)
        expected = [_pm(values(init, k, ref), True) for k in ("step0_miou", "miou", "boundary")]
        expected.append(f"{sum(d > 0 for d in diffs)}/{len(diffs)}")
        bad += [
            f"{init} (paired): {s} (the JSON: {w})" for s, w in zip(row[1:], expected, strict=True) if s != w
        ]
    return bad


_WINS = "wins: seeds where the row beats transparent)"
ABLATION_RUNS = [
    (
        "ablation",
        "Step-0 and final mIoU per initialization",
        f"Paired differences to ``transparent`` (same seed; points; {_WINS}",
    ),
    (
        "ablation_10seeds",
        "Step-0 and final mIoU per initialization, 10 seeds",
        f"Paired differences to ``transparent``, 10 seeds (points; {_WINS}",
    ),
]


@pytest.mark.parametrize(("folder", "summary_title", "paired_title"), ABLATION_RUNS)
def test_ablation_tables_match_their_json(folder: str, summary_title: str, paired_title: str) -> None:
    """The ablation page's tables (the headline evidence for the paper's claim) are the committed run's
    per-seed rows, mean ± sample std and paired differences recomputed here, not copied from its summary."""
    text = (ROOT / "docs" / "examples" / "ablation.rst").read_text(encoding="utf-8")
    result = json.loads((RESULTS / folder / "ablation.json").read_text())
    bad = ablation_table_mismatches(text, result, summary_title, paired_title)
    assert not bad, f"the ablation tables differ from {folder}/ablation.json:\n" + "\n".join(bad)


def test_ablation_table_check_itself() -> None:
    text = (
        ".. csv-table:: S\n   :header: a\n\n   transparent, 2, 20.0 ± 0.0, 50.0 ± 7.1, 40.0 ± 0.0\n"
        "   xavier, 2, 0.0 ± 0.0, 55.0 ± 21.2, 40.0 ± 0.0\n\nafter\n\n"
        ".. csv-table:: P\n   :header: a\n\n   xavier, -20.0 ± 0.0, +5.0 ± 14.1, +0.0 ± 0.0, 2/2\n\nafter\n"
    )
    rows = [
        {"init": i, "seed": s, "step0_miou": m0, "miou": m, "boundary_miou": {"3": 0.4}}
        for i, s, m0, m in [
            ("transparent", 0, 0.2, 0.45),
            ("transparent", 1, 0.2, 0.55),
            ("xavier", 0, 0.0, 0.4),
            ("xavier", 1, 0.0, 0.7),
        ]
    ]
    assert ablation_table_mismatches(text, {"rows": rows}, "S", "P") == [
        "xavier (paired): 2/2 (the JSON: 1/2)"
    ]


def test_ablation_ten_seed_intervals_match_their_json() -> None:
    """The hand-computed 95 % intervals of the 10-seed run's paired final-mIoU differences (mean, t
    distribution with 9 degrees of freedom) and the seed counts beside them match ``ablation.json``."""
    text = _flat("docs", "examples", "ablation.rst")
    result = json.loads((RESULTS / "ablation_10seeds" / "ablation.json").read_text())
    runs: dict[str, dict[int, float]] = {}
    for r in result["rows"]:
        runs.setdefault(r["init"], {})[int(r["seed"])] = r["miou"]
    found = re.findall(
        r"``(\w+)`` ([+-]\d\.\d\d) \[([+-]\d\.\d\d), ([+-]\d\.\d\d)\], (behind|ahead) on (?:all )?(\d+)", text
    )
    assert {f[0] for f in found} == {"net2net", "zero_residual", "no_fusion", "no_superpixels"}, found
    for init, mean_s, low_s, high_s, side, count in found:
        diffs = [100 * (runs[init][s] - runs["transparent"][s]) for s in sorted(runs[init])]
        mean, _, half = _paired_interval(diffs)
        want = [f"{mean:+.2f}", f"{mean - half:+.2f}", f"{mean + half:+.2f}"]
        assert [mean_s, low_s, high_s] == want, f"{init}: page {mean_s} [{low_s}, {high_s}], JSON {want}"
        n = sum(d < 0 for d in diffs) if side == "behind" else sum(d > 0 for d in diffs)
        assert int(count) == n, f"{init}: page {side} on {count}, JSON {n}"


#: The folders of the committed fusion-widths runs (docs/examples/ablation.rst), the paper's stack first.
WIDTHS_FOLDERS = ("paper_64-64", "hidden_64", "hidden_42-42")


def _widths_results() -> dict[str, dict]:
    """The ``ablation.json`` of every committed fusion-widths run, by folder."""
    return {f: _result(f"ablation_fusion_widths/{f}/ablation.json") for f in WIDTHS_FOLDERS}


def _widths_runs(results: dict[str, dict]) -> dict[str, dict[str, dict[int, dict]]]:
    """The rows of the fusion-widths runs: folder -> init -> seed -> row."""
    runs: dict[str, dict[str, dict[int, dict]]] = {}
    for folder, result in results.items():
        for row in result["rows"]:
            runs.setdefault(folder, {}).setdefault(row["init"], {})[int(row["seed"])] = row
    return runs


def _widths_diffs(runs: dict, folder: str, init: str) -> list[float]:
    paper = runs["paper_64-64"]["transparent"]
    return [100 * (row["miou"] - paper[s]["miou"]) for s, row in sorted(runs[folder][init].items())]


def test_docs_fusion_widths_paired_columns_show_the_committed_runs() -> None:
    """The fusion-widths table's paired difference to the paper's stack (mean ± sample std, 95 % interval from
    t with 9 degrees of freedom) and its "ahead" count (with ties) are those of the committed runs, seed by
    seed; ``test_docs_fusion_widths_table_shows_the_committed_runs`` (tests/examples/test_ablation.py) reads
    only the mIoU columns."""
    runs = _widths_runs(_widths_results())
    lines = (ROOT / "docs" / "examples" / "ablation.rst").read_text().splitlines()
    for name, folder, init in (
        ("42 42", "hidden_42-42", "transparent"),
        ("64", "hidden_64", "transparent"),
        ("no fusion (control)", "paper_64-64", "no_fusion"),
    ):
        diffs = _widths_diffs(runs, folder, init)
        mean, sd, half = _paired_interval(diffs)
        ties = sum(d == 0 for d in diffs)
        ahead = f"{sum(d > 0 for d in diffs)}/{len(diffs)}" + (f" ({ties} tie)" if ties else "")
        want = [f"{mean:+.2f} ± {sd:.2f} [{mean - half:+.2f} / {mean + half:+.2f}]", ahead]
        (line,) = [x for x in lines if x.startswith(f"   {name}, ")]
        cells = [c.strip() for c in line.split(",")]
        assert cells[4:6] == want, (name, cells[4:6], want)


def test_docs_fusion_widths_prose_matches_the_committed_runs() -> None:
    """The prose under the fusion-widths table: each run's seconds, the step-0 mIoU every row starts at, the
    one-hidden-layer stack's range of single seeds and the narrow stack's largest distance to the wide one."""
    results = _widths_results()
    runs = _widths_runs(results)
    page = _flat("docs", "examples", "ablation.rst")
    seconds = [results[f]["seconds"] for f in WIDTHS_FOLDERS]
    step0 = {100 * r["step0_miou"] for by in runs.values() for rows in by.values() for r in rows.values()}
    one = _widths_diffs(runs, "hidden_64", "transparent")
    narrow = max(abs(d) for d in _widths_diffs(runs, "hidden_42-42", "transparent"))
    want = [
        f"{seconds[0]:.0f} s, {seconds[1]:.0f} s and {seconds[2]:.0f} s",
        f"Every row starts at {min(step0):.1f}",
        f"single seeds {min(one):+.2f} to {max(one):+.2f}",
    ]
    assert len({f"{s:.1f}" for s in step0}) == 1, step0
    _assert_quotes(page, want, "ablation.rst")
    shown = re.search(r"the narrow stack ends within (\d\.\d) points of the wide one", page)
    assert shown is not None and narrow <= float(shown.group(1)) < narrow + 0.1, (shown, narrow)


def test_gpu_paper_speedup_range_matches_its_json() -> None:
    """The README's and the benchmarks page's range of "faster than the paper's (COO) encoder with the
    assignment built once" on the H200 is the last GPU check's paper_coo / scatter forward+backward times,
    each rounded to a whole number as the text prints it (11.5x is 12x, not 11x)."""
    result = _result("gpu_check_cuda_20261204_h200.json")
    rows = result["stages"]["uniformize"]["summary"]["rows"]
    speedups = [r["paper_coo"]["fwd_bwd_ms"] / r["scatter"]["fwd_bwd_ms"] for r in rows]
    want = f"{round(min(speedups))}-{round(max(speedups))}x"
    for page in (("README.md",), ("docs", "benchmarks.rst")):
        shown = re.findall(
            r"(\d+-\d+x) faster than the paper's (?:COO )?encoder with the assignment built once",
            _flat(*page),
        )
        assert shown, f"{page[-1]}: the GPU range was not found"
        assert shown == [want] * len(shown), f"{page[-1]}: {shown}, the JSON: {want} ({speedups})"


def test_readme_joint_row_cites_the_newest_resnet18_run() -> None:
    """The README's "Latest figures" joint-step row names the newest ResNet-18 run committed (by the date in
    its file name, then the time it records, then the name with its numbers as numbers: runs that record
    none, before 2026-12-05 evening, count as earlier that day), in its footnote with that run's paired
    ratio, and its date column reaches that date."""

    def recorded_time(path: Path) -> str:
        entry = json.loads(path.read_text()).get("cpu_resnet18_b2_128", {})
        return str(entry.get("machine", {}).get("time", ""))

    def natural(name: str) -> tuple[tuple[int, int | str], ...]:  # the series' numbers as numbers
        return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", name) if p)

    runs = sorted(
        (m.group(1), recorded_time(p), natural(p.name), p.name)
        for p in RESULTS.glob("joint_resnet18_2026*_epyc.json")
        if (m := re.match(r"joint_resnet18_(\d{8})_", p.name)) is not None
    )
    date, _, _, name = runs[-1]
    text = _flat("README.md")
    assert f"`{name}`" in text, f"README: the newest ResNet-18 run {name} is not cited"
    result = _result(name)
    row = next(r for r in result["cpu_resnet18_b2_128"]["rows"] if r["variant"] == "joint_hard_ti")
    assert f"{row['time_ratio_paired']:.2f}x" in text, f"README: {name}'s paired ratio is not quoted"
    line = _readme_line("| joint training step")
    measured = line.rstrip(" |").rsplit("|", 1)[1]
    assert f"-{date[6:]}," in measured or f"{date[:4]}-{date[4:6]}-{date[6:]}" in measured, (
        f"README joint row dated {measured.strip()!r}, the newest run {name}"
    )


#: The machine a result file's name gives (``..._xeon.json``): a word its recorded text must hold, and one it
#: must not (the other CPU of the project's VMs).
_NAMED_MACHINES = {"xeon": ("Xeon", "EPYC"), "epyc": ("EPYC", "Xeon"), "h200": ("H200", None)}


def result_name_mismatches(name: str, text: str) -> list[str]:
    """Where the file name ``name`` of a result file and its JSON ``text`` disagree: the machine its name
    gives (``_xeon``, ``_epyc``, ``_h200``) not recorded, or the other CPU recorded; the date in its name
    (``_YYYYMMDD``) not among the dates of its ``"time"`` entries, where it records any. The docs cite runs by
    these names, with their machine and date."""
    bad = []
    for tag, (recorded, other) in _NAMED_MACHINES.items():
        if re.search(rf"_{tag}(?=[_.])", name):
            if recorded not in text:
                bad.append(f"{name}: named {tag}, records no {recorded}")
            if other is not None and other in text:
                bad.append(f"{name}: named {tag}, records {other}")
    date = re.search(r"_(\d{4})(\d\d)(\d\d)(?=[_.])", name)
    times = set(re.findall(r'"time": "(\d{4}-\d\d-\d\d)', text))
    if date is not None and times and "-".join(date.groups()) not in times:
        bad.append(f"{name}: dated {''.join(date.groups())}, records {sorted(times)}")
    return bad


def test_result_file_names_match_their_recorded_machine_and_date() -> None:
    files = sorted(RESULTS.rglob("*.json"))
    assert len(files) >= 60
    bad = [m for path in files for m in result_name_mismatches(path.name, path.read_text(encoding="utf-8"))]
    assert not bad, "result files whose name and record disagree:\n" + "\n".join(bad)


def test_result_name_check_itself() -> None:
    xeon = '{"meta": {"cpu_model": "Intel(R) Xeon(R) Processor", "time": "2026-12-01 16:08 UTC"}}'
    assert result_name_mismatches("bench_uniformize_cpu_20261201_xeon.json", xeon) == []
    assert result_name_mismatches("bench_uniformize_cpu_20261201_epyc.json", xeon) == [
        "bench_uniformize_cpu_20261201_epyc.json: named epyc, records no EPYC",
        "bench_uniformize_cpu_20261201_epyc.json: named epyc, records Xeon",
    ]
    assert result_name_mismatches("soft_20261202_xeon_rss.json", xeon) == [
        "soft_20261202_xeon_rss.json: dated 20261202, records ['2026-12-01']"
    ]
    assert result_name_mismatches("joint_20261202_epyc.json", '{"machine": "AMD EPYC (avx2)"}') == []


def test_readme_soft_row_matches_its_json() -> None:
    """The README's soft pool + unpool row: speed-up and memory ratio of the 9-shift implementation over
    ``block`` in ``soft_20261206_f26_tensors_epyc.json`` (peak tensor bytes), one decimal."""
    rows = _result("soft_20261206_f26_tensors_epyc.json")["soft"]["rows"]
    by = {(r["impl"], r["C"]): r for r in rows}
    cs = sorted({c for _, c in by})
    speed = [by[("nine_shift", c)]["median_ms"] / by[("block", c)]["median_ms"] for c in cs]
    memory = [by[("nine_shift", c)]["peak_tensor_mib"] / by[("block", c)]["peak_tensor_mib"] for c in cs]
    want = f"{_range(speed, 1)} faster and {_range(memory, 1)} less memory (peak tensor bytes)"
    assert want in _flat("README.md"), f"README soft row should read {want!r}"
    assert f"C = {cs[0]}-{cs[-1]}" in _flat("README.md")


def test_readme_uniformize_row_matches_its_runs() -> None:
    """The README's ``uniformize`` row: paired ratio to the floor of the 2026-12-02 EPYC run, of its two
    scatter-only runs, of the three family-26 runs; the speed-up over the paper's encoder with our setup
    (``paper_over_this``) of 2026-12-02; the family-26 memory ratios (tensor peak and resident-set growth)."""

    def configs(*names: str) -> list[dict]:
        return [c["results"] for n in names for c in _result(n)["configs"]]

    main = configs("bench_uniformize_cpu_20261202_epyc.json")
    more = configs(
        "bench_uniformize_cpu_20261202_epyc_scatter_1.json",
        "bench_uniformize_cpu_20261202_epyc_scatter_2.json",
    )
    f26 = configs(
        "bench_uniformize_cpu_20261206_f26_epyc.json",
        "bench_uniformize_cpu_20261206_f26_sort_epyc.json",
        "bench_uniformize_cpu_20261206_f26_tensors_epyc.json",
    )
    tensors = configs("bench_uniformize_cpu_20261206_f26_tensors_epyc.json")

    def paired(rs: list[dict]) -> list[float]:
        return [r["scatter"]["paired_x_floor"] for r in rs]

    row = _readme_line("| `uniformize`")
    want = [
        f"{_range(paired(main))} the floor¹ (paired; {_range(paired(more))} in two more runs; "
        f"{_range(paired(f26))} in three runs on an AMD EPYC of family 26",
        f"{_range([r['scatter']['paper_over_this'] for r in main], 1)} faster than the paper's COO sparse "
        "encoder",
        _range([r["scatter"]["peak_tensor_mib"] / r["floor"]["peak_tensor_mib"] for r in tensors])
        + " the floor's peak tensor memory ("
        + _range([r["scatter"]["peak_extra_mb"] / r["floor"]["peak_extra_mb"] for r in tensors])
        + " its resident-set growth",
    ]
    _assert_quotes(row, want, "README uniformize row")


def test_readme_other_ops_row_matches_its_json() -> None:
    """The README's row of the other ops: ``spixel_loss`` and ``hard_superpixels`` speed-ups (paired) and the
    paired range of the pools, unpool and SPN ops of the family-26 ``fair`` run, the memory ratio of its
    ``tensors`` re-run, ``enforce_connectivity`` of the connectivity run (and of ``fair``, before)."""
    fair = _result("bench_ops_cpu_20261206_f26_fair_epyc.json")["ops"]
    tensors = _result("bench_ops_cpu_20261206_f26_tensors_epyc.json")["ops"]
    conn = _result("bench_ops_connectivity_20261206_f26_epyc.json")["ops"]["enforce_connectivity"]
    loss_rows = tensors["spixel_loss"]["rows"]
    pooling = ("pool_mean", "pool_sum", "pool_max", "unpool", "superpixel_cam", "superpixel_global_average")
    paired = [fair[k]["paired_ratio_to_alternative"] for k in pooling]
    medians = [fair[k]["ratio_to_alternative"] for k in pooling]
    reused = [fair[k]["paired_ratio_to_alternative"] for k in ("pool_mean_reused", "unpool_reused")]
    row = _readme_line("| the other ops")
    want = [
        f"`spixel_loss` {1 / fair['spixel_loss']['paired_ratio_to_alternative']:.0f}x faster and "
        f"{loss_rows[1]['peak_tensor_mib'] / loss_rows[0]['peak_tensor_mib']:.1f}x less memory",
        f"`hard_superpixels` {1 / fair['hard_superpixels']['paired_ratio_to_alternative']:.0f}x faster",
        f"{_range(paired, 1)[:-1]}x slower than `scatter_add` / `gather` paired "
        f"(up to {max(medians):.1f}x by medians)",
        f"reused, the mean pool and unpool {_range(reused)}",
        f"`enforce_connectivity` {conn['paired_ratio_to_alternative']:.1f}x slower",
        f"{fair['enforce_connectivity']['paired_ratio_to_alternative']:.0f}x with its per-label loop before",
    ]
    _assert_quotes(row, want, "README other-ops row")


def test_readme_cpu_table_matches_the_joint_series() -> None:
    """The README's footnote table of the current code: per CPU, the DeepLabV3+ step range, the median and
    range of the paired joint / DeepLabV3+ ratio over the ResNet-18 series, and the range without the fusion
    stack."""
    series = {
        "AMD EPYC, family 26": [
            "joint_resnet18_20261206_f26_series_*_epyc.json",
            "joint_resnet18_20261206_f26_sort_*_epyc.json",
        ],
        "Intel Xeon": ["joint_resnet18_20261206_series_*_xeon.json"],
        "AMD EPYC, family 25": ["joint_resnet18_20261207_f25_series_*_epyc.json"],
    }
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    bad = []
    for cpu, patterns in series.items():
        files = [p for pattern in patterns for p in RESULTS.glob(pattern)]
        assert files, cpu
        ti, noti, step = [], [], []
        for path in files:
            by = {r["variant"]: r for r in json.loads(path.read_text())["cpu_resnet18_b2_128"]["rows"]}
            ti.append(by["joint_hard_ti"]["time_ratio_paired"])
            noti.append(by["joint_hard_noti"]["time_ratio_paired"])
            step.append(by["deeplab"]["median_s"] * 1000)
        line = next(x for x in lines if x.startswith(f"| {cpu}"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[1] != f"{min(step):.0f}-{max(step):.0f} ms":
            bad.append(f"{cpu}: step {cells[1]} (JSON {min(step):.0f}-{max(step):.0f} ms)")
        if f"({_range(ti)})" not in cells[2]:
            bad.append(f"{cpu}: range {cells[2]} (JSON {_range(ti)})")
        median = statistics.median(ti)
        if not re.search(rf"median {median:.2f}|median {median:.3f}", cells[2]):
            bad.append(f"{cpu}: {cells[2]} (JSON median {median:.3f})")
        if cells[3] != _range(noti):
            bad.append(f"{cpu}: without the stack {cells[3]} (JSON {_range(noti)})")
        below = re.search(r"1\.50x or less in (\d+) of (\d+)", cells[2])
        if below and (int(below.group(1)), int(below.group(2))) != (sum(t <= 1.5 for t in ti), len(ti)):
            bad.append(f"{cpu}: {below.group(0)} (JSON {sum(t <= 1.5 for t in ti)} of {len(ti)})")
    assert not bad, "\n".join(bad)


def test_readme_gpu_paragraph_matches_the_gpu_checks() -> None:
    """The README's GPU paragraph: test counts, ``uniformize`` time and ratio to the floor, the joint step
    ratio (and without the fusion) of the H200 and H100 runs."""
    text = _flat("README.md")
    h200 = _result("gpu_check_cuda_20261204_h200.json")["stages"]
    h100 = _result("gpu_check_cuda_20261205_h100.json")["stages"]
    t200, t100 = h200["tests"]["summary"], h100["tests"]["summary"]
    rows = h200["uniformize"]["summary"]["rows"]
    ms = [r["scatter"]["fwd_bwd_ms"] for r in rows]
    x200 = [r["scatter"]["fwd_bwd_ms"] / r["floor"]["fwd_bwd_ms"] for r in rows]
    x100 = [
        r["scatter"]["fwd_bwd_ms"] / r["floor"]["fwd_bwd_ms"] for r in h100["uniformize"]["summary"]["rows"]
    ]
    j200, j100 = h200["joint"]["summary"]["ratios"], h100["joint"]["summary"]["ratios"]
    want = [
        f"the CUDA tests pass ({t200['passed']} passed, {t200['skipped']} skipped)",
        f"takes {min(ms):.1f}-{max(ms):.1f} ms",
        f"but {_range(x200, 1)} the floor",
        f"is {j200['joint_hard_ti']:.2f}x DeepLabV3+'s",
        f"the model without the fusion is already {j200['joint_hard_noti']:.2f}x",
        f"{t100['passed']} CUDA tests pass ({t100['skipped']} skipped)",
        f"takes {_range(x100, 1)} the floor, the joint step {j100['joint_hard_ti']:.2f}x DeepLabV3+'s",
    ]
    _assert_quotes(text, want, "README GPU paragraph")


def _demo_transcript() -> str:
    return (ROOT / "docs" / "examples" / "demo_output.txt").read_text(encoding="utf-8")


def test_pipeline_demo_steps_are_the_transcripts() -> None:
    """The pipeline page's demo steps ("ResNet-18 ..., 288 steps", "SpixelFCN (128 steps)", "after 128 steps
    they start to bend") are the step counts the transcript's two pretraining stages print."""
    transcript = _demo_transcript()
    seg = re.search(r"\[seg\] done: (\d+) steps", transcript)
    spixel = re.search(r"\[spixel\] done: (\d+) steps", transcript)
    assert seg is not None and spixel is not None
    page = _flat("docs", "examples", "pipeline.rst")
    want = [
        f"64x64 crops, {seg.group(1)} steps)",
        f"pretrain SpixelFCN ({spixel.group(1)} steps)",
        f"after {spixel.group(1)} steps they start to bend",
    ]
    _assert_quotes(page, want, "pipeline.rst")


def test_the_demo_time_the_pages_quote_is_the_transcripts() -> None:
    """The README's and the installation page's "N s in the transcript of <date>" and the pipeline page's "N s
    on the project's 2-core VM" are the time ``docs/examples/demo_output.txt`` prints on its "[demo] finished
    in N s" line."""
    seconds = re.search(r"\[demo\] finished in (\d+) s", _demo_transcript())
    assert seconds is not None
    pages = {
        ("README.md",): r"(\d+) s in the transcript of \d{4}-\d\d-\d\d",
        ("docs", "installation.rst"): r"(\d+) s in the transcript of \d{4}-\d\d-\d\d",
        ("docs", "examples", "pipeline.rst"): r"(\d+) s on the project's 2-core VM",
    }
    for parts, pattern in pages.items():
        shown = re.findall(pattern, _flat(*parts))
        assert shown and set(shown) == {seconds.group(1)}, (
            f"{parts[-1]}: {shown}, transcript {seconds.group(1)} s"
        )


def test_pipeline_demo_rows_are_the_transcripts() -> None:
    """The pipeline page's reading of the demo table: the fine-tuned rows' mIoU range, the Xavier row
    (mIoU / boundary mIoU) and the control's consistency are the transcript's table."""
    rows = {}
    for line in _demo_transcript().splitlines():
        found = re.match(r"(.+?)\s{2,}(\d+\.\d\d)\s+(\d+\.\d\d)\s+(\d+\.\d\d|-)$", line)
        if found:
            rows[found.group(1).strip()] = found.groups()[1:]
    tuned = [float(v[0]) for k, v in rows.items() if k.endswith("(fine-tuned)") and "Xavier" not in k]
    tuned.append(float(rows["DeepLabV3+ fine-tuned alike (no superpixels)"][0]))
    xavier = rows["+ superpixel + Xavier init (fine-tuned)"]
    control = rows["DeepLabV3+ fine-tuned alike (no superpixels)"]
    page = _flat("docs", "examples", "pipeline.rst")
    want = [
        f"to {min(tuned):.1f}-{max(tuned):.1f}. The transcript",
        f"to {xavier[0]} / {xavier[1]}, every other row unchanged",
        f"against {float(control[2]):.1f} % for the control",
    ]
    _assert_quotes(page, want, "pipeline.rst")


def test_benchmarks_transparent_headline_matches_its_json() -> None:
    """The benchmarks page's headline row of ``bench_transparent_init.py``: the identity error at inputs in
    [-10, 10] (median and worst seed of ``table3``'s ``ours_relu``), the paper's figure, the init rate and the
    forward ratio of ``transparent_init.json``."""
    result = _result("transparent_init.json")
    at10 = result["table3"]["ours_relu"]["10"]
    ours = result["table2"]["ours"]

    want = (
        f"max error {_sci(at10['median'])} (worst seed {_sci(at10['worst'])}) for float32 inputs in "
        f"[-10, 10] vs the paper's {_sci(result['paper_table3']['10'])}; "
        f"init rate {ours['init_rate']:.3f} %; recovery {ours['recovery_no_relu']:.0f} % with and without "
        f"ReLU; forward time {result['cost']['forward_ratio']:.2f}x the plain"
    )
    assert want in _flat("docs", "benchmarks.rst"), want


def test_benchmarks_uniformize_headline_matches_its_json() -> None:
    """The benchmarks page's headline row of ``bench_uniformize.py`` for the family-26 run: paired and sweep
    ratios to the floor, the sweep's max / min, ratios of medians, speed-up over the paper's encoder, peak
    tensor memory and resident-set growth against the floor's."""
    result = _result("bench_uniformize_cpu_20261206_f26_tensors_epyc.json")
    runs = [c["results"] for c in result["configs"]]
    sweep = [r["x_floor"] for r in result["sweep"]["rows"]]
    want = (
        f"forward+backward {_range([r['scatter']['paired_x_floor'] for r in runs])} the floor paired (sweep "
        f"{_range(sweep)}, max / min over ``N_s`` {result['sweep']['grid_max_over_min']:.3f}; by medians "
        f"{_range([r['scatter']['x_floor'] for r in runs])}); "
        f"{_range([r['scatter']['paper_over_this'] for r in runs], 1)} faster than the paper's per-image COO "
        "encoder including our setup; peak tensor memory "
        + _range([r["scatter"]["peak_tensor_mib"] / r["floor"]["peak_tensor_mib"] for r in runs])
        + " the floor's ("
        + _range([r["scatter"]["peak_extra_mb"] / r["floor"]["peak_extra_mb"] for r in runs])
        + " by the resident-set growth)"
    )
    assert want in _flat("docs", "benchmarks.rst"), want


def test_benchmarks_soft_headline_matches_its_json() -> None:
    """The benchmarks page's headline row of ``bench_soft.py`` for the family-26 run: speed-up and memory
    ratio (tensor peak) of the 9-shift implementation per ``C``, the scatter version's ranges, and the SegNet
    unpool against ``nn.MaxUnpool2d`` (paired, by medians)."""
    result = _result("soft_20261206_f26_tensors_epyc.json")
    by = {(r["impl"], r["C"]): r for r in result["soft"]["rows"]}
    cs = sorted({c for _, c in by})

    def ratios(impl: str, key: str) -> list[float]:
        return [by[(impl, c)][key] / by[("block", c)][key] for c in cs]

    def slashed(values: list[float]) -> str:
        return " / ".join(f"{v:.1f}x" for v in values)

    unpool = result["segnet_unpool"]
    (ours,) = [r for r in unpool["rows"] if r["impl"] == "max_unpool2d"]
    want = [
        f"{slashed(ratios('nine_shift', 'median_ms'))} faster than a 9-shift implementation for C = "
        + " / ".join(str(c) for c in cs),
        f"with {slashed(ratios('nine_shift', 'peak_tensor_mib'))} less memory",
        f"{_range(ratios('scatter', 'median_ms'), 1)} faster and "
        f"{_range(ratios('scatter', 'peak_tensor_mib'), 1)[:-1]}x leaner than the scatter version",
        f"SegNet unpool {unpool['paired_ratio_to_nn']:.2f}x the time of ``nn.MaxUnpool2d`` paired on "
        f"2026-12-06 ({ours['ratio_to_nn']:.2f}x by medians",
    ]
    _assert_quotes(_flat("docs", "benchmarks.rst"), want, "benchmarks.rst soft headline")


def _transparent_row(label: str, figures: dict) -> str:
    """A list-table row of the transparent-init page: ``* - label - median [worst] - ...``, r = 1 to 1000."""
    cells = [f"{_sci(figures[r]['median'])} [{_sci(figures[r]['worst'])}]" for r in TRANSPARENT_RANGES]
    return " - ".join([f"* - {label}", *cells])


def test_transparent_page_width_table_matches_its_json() -> None:
    """The transparent-init page's table of widths (``TransparentLinear(w, [w, w])``, median [worst] of 10
    seeds) is the ``widths`` block of ``transparent_init.json``, cell by cell; the float32 matmul floor and
    "within 1.5e-3 of its input" at 1024 channels and r = 1000 are its figures too."""
    result = _result("transparent_init.json")
    widths = result["widths"]
    rows = {
        "42": "42 relu",
        "256": "256 relu",
        "1024": "1024 relu",
        "1024, no activation": "1024 none",
        "1024, LeakyReLU 0.01": "1024 leaky_relu 0.01",
    }
    page = _flat("docs", "concepts", "transparent_init.rst")
    missing = [label for label, key in rows.items() if _transparent_row(label, widths[key]) not in page]
    assert not missing, f"transparent_init.rst width rows differ from the JSON: {missing}"
    floor = widths["matmul_floor_r1"]
    want = " / ".join(_sci(floor[w]["median"]) for w in ("42", "256", "1024")) + " at widths 42 / 256 / 1024"
    assert want in page, want
    worst = max(widths[key]["1000"]["worst"] for key in rows.values() if key.startswith("1024"))
    assert f"a float32 stack is within {_sci(worst)} of its input" in page, _sci(worst)


def test_transparent_page_tables_2_and_3_match_its_json() -> None:
    """The transparent-init page's Table 2 (init rate, recoveries, non-square) and Table 3 (median [worst] of
    the four cases and the paper's row), the depth sentence and its lowest init rate are
    ``transparent_init.json``'s ``table2``, ``table3`` and ``paper_table3``."""
    result = _result("transparent_init.json")
    t2, t3 = result["table2"], result["table3"]
    page = _flat("docs", "concepts", "transparent_init.rst")
    want = []
    for label, key in (("random uniform", "random"), ("Xavier", "xavier"), ("Net2Net identity", "net2net")):
        row = t2[key]
        cells = (row["recovery_no_relu"], row["recovery_relu"], row["non_square_recovery"])
        want.append(f"* - {label} - {row['init_rate']:.3f} - " + " - ".join(f"{c:.2f}" for c in cells))
    ours = t2["ours"]
    cells = (ours["recovery_no_relu"], ours["recovery_relu"], ours["non_square_recovery"])
    want.append(
        f"* - **ours** - **{ours['init_rate']:.3f}** (min {ours['init_rate_min']:.3f}) - "
        + " - ".join(f"**{c:.2f}**" for c in cells)
    )
    cases = {
        "ours, ReLU": "ours_relu",
        "ours, no activation": "ours_none",
        "ours, LeakyReLU 0.01": "ours_leaky_relu",
        "authors' recipe, ReLU": "authors_recipe_relu",
    }
    want += [_transparent_row(label, t3[key]) for label, key in cases.items()]
    paper = result["paper_table3"]
    want.append("* - paper - " + " - ".join(_sci(paper[r]) for r in TRANSPARENT_RANGES))
    depth = t3["depth_relu_range10"]
    depths = sorted(depth, key=int)
    lowest = min(depth[d]["init_rate_min"] for d in depths)
    want.append(
        f"depths {' / '.join(depths)}: "
        + " / ".join(_sci(depth[d]["median"]) for d in depths)
        + f", init rate >= {lowest:.3f} %"
    )
    want.append(f"lowest measured over seeds and depths {depths[0]}-{depths[-1]}: {lowest:.3f} %")
    _assert_quotes(page, want, "transparent_init.rst")


def test_transparent_page_cost_paragraph_matches_its_json() -> None:
    """The transparent-init page's cost paragraph: input shape and rounds, the two forward medians and the
    per-round ratio, the load average, the parameter count and memory and the build times are the ``cost``
    block and ``machine`` of ``transparent_init.json``."""
    result = _result("transparent_init.json")
    cost = result["cost"]
    forward, build, memory = cost["forward_ms"], cost["build_ms"], cost["memory_mib"]
    shape = ", ".join(str(d) for d in cost["input_shape"])
    parameters = f"{memory['num_parameters']:,}".replace(",", " ")
    want = [
        f"Input [{shape}], no-grad forward, {cost['rounds']} alternating rounds",
        f"{forward['transparent']:.1f} ms vs {forward['plain_sequential']:.1f} ms on 2026-12-04",
        f"load average {result['machine']['load_average_at_start']:.1f} at the start), "
        f"median per-round ratio {cost['forward_ratio']:.3f}",
        f"Both have {parameters} parameters ({memory['parameters_transparent']:.3f} MiB) and "
        f"{memory['activations_per_forward']:.0f} MiB of layer outputs per forward",
        f"takes {build['transparent']:.1f} ms against {build['plain_sequential']:.2f} ms for PyTorch's",
        f"medians over {result['seeds']} seeds",
        f"{result['machine']['threads']} threads, 2026-12-01; inputs float32 of shape "
        f"[{', '.join(str(d) for d in result['input_shape'])}]",
    ]
    assert memory["parameters_plain"] == memory["parameters_transparent"]
    _assert_quotes(
        _flat("docs", "concepts", "transparent_init.rst"), want, "transparent_init.rst cost paragraph"
    )


#: The runs of the SegNet unpooling table of docs/concepts/segnet_unpooling.rst, by the file each row names.
SEGNET_UNPOOL_RUNS = (
    "soft.json",
    "soft_20261130.json",
    "soft_20261130_xeon_rss_reset.json",
    "soft_20261201_xeon.json",
    "soft_20261206_f26_tensors_epyc.json",
)


def test_segnet_unpooling_table_matches_its_jsons() -> None:
    """The SegNet page's unpooling table: per committed run, the two medians (0.01 ms), the ratio of medians
    and the paired ratio (0.01x) of that file's ``segnet_unpool``; the prose's paired range (one decimal) and
    ratio-of-medians range over the same files; 50 runs per median and the B / C / size of the caption."""
    page = _flat("docs", "concepts", "segnet_unpooling.rst")
    paired, medians, bad = [], [], []
    for name in SEGNET_UNPOOL_RUNS:
        unpool = _result(name)["segnet_unpool"]
        by = {r["impl"]: r for r in unpool["rows"]}
        ours, theirs = by["max_unpool2d"], by["nn.MaxUnpool2d"]
        paired.append(unpool["paired_ratio_to_nn"])
        medians.append(ours["ratio_to_nn"])
        row = (
            f"(``{name}``) - {ours['median_ms']:.2f} - {theirs['median_ms']:.2f} - "
            f"{ours['ratio_to_nn']:.2f}x - {unpool['paired_ratio_to_nn']:.2f}x"
        )
        if row not in page:
            bad.append(row)
        if (len(ours["times_ms"]), len(theirs["times_ms"])) != (50, 50):
            bad.append(f"{name}: not 50 runs each")
        if (unpool["B"], unpool["C"], unpool["H"], unpool["W"]) != (4, 21, 256, 256):
            bad.append(f"{name}: not B=4, C=21, 256 x 256")
    want = [
        f"**{min(paired):.1f}-{max(paired):.1f}x the time of** ``nn.MaxUnpool2d`` in the "
        f"{['one', 'two', 'three', 'four', 'five', 'six'][len(SEGNET_UNPOOL_RUNS) - 1]} committed runs",
        f"from {min(medians):.2f}x to {max(medians):.2f}x",
    ]
    bad += [w for w in want if w not in page]
    assert not bad, f"segnet_unpooling.rst differs from the committed runs: {bad}"


def _gpu_uniformize_cell(row: dict, key: str, ms: str, ratio: str) -> str:
    """``1.34 (7.13x)``: forward+backward ms and ratio of medians to the floor, as the H200 table prints."""
    return f"{row[key]['fwd_bwd_ms']:{ms}} ({row[key]['x_floor']:{ratio}}x)"


def test_benchmarks_h200_section_matches_its_gpu_check() -> None:
    """The benchmarks page's "Results on an H200": the uniformization table (floor, the four backends and the
    dense ``bmm`` at N_s = 1024), the joint step of (c), the soft pool + unpool paragraph and the training run
    of (d) are the summaries of ``gpu_check_cuda_20261204_h200.json``."""
    stages = _result("gpu_check_cuda_20261204_h200.json")["stages"]
    want = []
    for row in stages["uniformize"]["summary"]["rows"]:
        cells = [
            f"* - {row['N_s']} - {row['floor']['fwd_bwd_ms']:.2f}",
            _gpu_uniformize_cell(row, "scatter", ".2f", ".2f"),
            _gpu_uniformize_cell(row, "sparse", ".2f", ".1f"),
            _gpu_uniformize_cell(row, "sparse_coo", ".2f", ".1f"),
            _gpu_uniformize_cell(row, "paper_coo", ".1f", ".0f"),
        ]
        if not row["dense_bmm"]["skipped"]:
            cells.append(
                _gpu_uniformize_cell(row, "dense_bmm", ".1f", ".0f")
                + f", {row['dense_bmm']['peak_extra_mb']:.0f} MiB"
            )
        want.append(" - ".join(cells))
    joint = stages["joint"]["summary"]
    step, ratio = joint["step_ms"], joint["ratios"]
    want.append(
        f"DeepLabV3+ {step['deeplab']:.1f} ms, ``joint_hard_noti`` {step['joint_hard_noti']:.1f} ms "
        f"({ratio['joint_hard_noti']:.2f}x), ``joint_hard_ti`` {step['joint_hard_ti']:.1f} ms "
        f"(**{ratio['joint_hard_ti']:.2f}x**), ``joint_soft_ti`` {step['joint_soft_ti']:.1f} ms "
        f"({ratio['joint_soft_ti']:.2f}x)"
    )
    soft = stages["soft"]["raw"]["soft"]["rows"]
    by = {(r["impl"], r["C"]): r for r in soft}
    cs = sorted({c for _, c in by})
    block = [by["block", c]["median_ms"] for c in cs]
    nine = [by["nine_shift", c]["median_ms"] / by["block", c]["median_ms"] for c in cs]
    scatter = [by["scatter", c]["median_ms"] / by["block", c]["median_ms"] for c in cs]
    memory = [
        by[i, c]["peak_cuda_extra_mib"] / by["block", c]["peak_cuda_extra_mib"]
        for i in ("nine_shift", "scatter")
        for c in cs
    ]
    c21 = [by[i, 21]["peak_cuda_extra_mib"] for i in ("block", "nine_shift", "scatter")]
    want.append(
        f"unpool {min(block):.1f}-{max(block):.1f} ms forward+backward, {_range(nine, 1)} faster than the "
        f"9-shift recipe and {min(scatter):.0f}-{max(scatter):.0f}x faster than the ``index_add`` form, with "
        f"{_range(memory, 1)} less memory (C = 21: {c21[0]:.0f} MiB against {c21[1]:.0f} / {c21[2]:.0f} MiB)"
    )
    want.append(
        f"is {stages['soft']['summary']['segnet_paired_ratio_to_nn']:.2f}x ``nn.MaxUnpool2d``'s time on CUDA"
    )
    train = stages["train"]["summary"]
    st = train["stages"]
    names = {"seg": "DeepLabV3+", "spixel": "SpixelFCN", "joint": "the joint model"}
    first = ", ".join(
        f"{name} {st[k]['s_per_step'] * 1000:.1f} ms{' a step' if k == 'seg' else ''} "
        f"({st[k]['images_per_s']:.0f} images/s)"
        for k, name in names.items()
    )
    want.append(f"{first}, {train['joint_over_seg']:.2f}x the seg stage")
    f32, amp = train["transparency"]["float32"], train["transparency"]["amp"]
    assert amp["max_abs_diff"] == f32["max_abs_diff"]
    diff = f"{f32['max_abs_diff']:.2e}".replace("e-0", "e-")
    want.append(
        f"= {diff} for logits up to {f32['max_abs_logit']:.1f} ({_sci(f32['relative'])} relative in float32; "
        f"{_sci(amp['relative'])} under AMP, the same absolute figure)"
    )
    page = _flat("docs", "benchmarks.rst")
    _assert_quotes(page, want, "benchmarks.rst H200 section")


def test_benchmarks_h100_section_matches_its_gpu_check() -> None:
    """The benchmarks page's "Results on an H100": the tests, the ``scatter`` times and ratios, the floor,
    ``sparse`` and the paper's encoder, the joint ratios, the memory-format ratios, soft pool + unpool and the
    training run are the summaries of ``gpu_check_cuda_20261205_h100.json``."""
    stages = _result("gpu_check_cuda_20261205_h100.json")["stages"]
    tests = stages["tests"]["summary"]
    rows = stages["uniformize"]["summary"]["rows"]
    scatter = [r["scatter"]["fwd_bwd_ms"] for r in rows]
    floor = {f"{r['floor']['fwd_bwd_ms']:.2f}" for r in rows}
    sparse = [r["sparse"]["fwd_bwd_ms"] for r in rows]
    paper = [r["paper_coo"]["fwd_bwd_ms"] for r in rows]
    over = [r["paper_coo"]["fwd_bwd_ms"] / r["scatter"]["fwd_bwd_ms"] for r in rows]
    joint = stages["joint"]["summary"]
    ratio, formats = joint["ratios"], joint["channels_last_ratios"]
    soft = stages["soft"]["summary"]
    block = [v["block"] for v in soft["soft_ms"].values()]
    nine = [v["nine_shift"] / v["block"] for v in soft["soft_ms"].values()]
    index_add = [v["scatter"] / v["block"] for v in soft["soft_ms"].values()]
    train = stages["train"]["summary"]
    st, tr = train["stages"], train["transparency"]
    assert len(floor) == 1, floor
    want = [
        f"{tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped",
        "forward + backward " + ", ".join(f"{t:.2f}" for t in scatter[:-1]) + f" and {scatter[-1]:.2f} ms",
        ", ".join(f"{r['scatter']['x_floor']:.2f}x" for r in rows[:-1])
        + f" and {rows[-1]['scatter']['x_floor']:.2f}x the ``x * 1`` floor ({floor.pop()} ms)",
        f"``sparse`` {min(sparse):.2f}-{max(sparse):.2f} ms",
        f"encoder {min(paper):.1f}-{max(paper):.1f} ms, {min(over):.1f}-{max(over):.1f}x ``scatter``'s time",
        f"DeepLabV3+ alone {joint['step_ms']['deeplab']:.1f} ms, ``joint_hard_noti`` "
        f"{ratio['joint_hard_noti']:.2f}x, ``joint_hard_ti`` {ratio['joint_hard_ti']:.2f}x",
        f"``joint_soft_ti`` {ratio['joint_soft_ti']:.2f}x",
        f"DeepLabV3+ {formats['deeplab']:.2f}x, SpixelFCN {formats['spixelfcn']:.2f}x",
        f"the block form {min(block):.1f}-{max(block):.1f} ms, {_range(nine, 1)[:-1]}x faster than the "
        f"9-shift recipe and {_range(index_add, 1)[:-1]}x than the ``index_add`` form; ``max_unpool2d`` "
        f"{soft['segnet_paired_ratio_to_nn']:.2f}x",
        f"DeepLabV3+ {st['seg']['s_per_step'] * 1000:.1f} ms a step, SpixelFCN "
        f"{st['spixel']['s_per_step'] * 1000:.1f} ms, the joint model "
        f"{st['joint']['s_per_step'] * 1000:.1f} ms, {train['joint_over_seg']:.2f}x the seg stage",
        f"= {tr['float32']['max_abs_diff']:.1e} for logits up to {tr['float32']['max_abs_logit']:.1f} "
        f"({tr['float32']['relative']:.1e} relative) in float32, {tr['amp']['max_abs_diff']:.1e} under AMP",
    ]
    page = _flat("docs", "benchmarks.rst")
    _assert_quotes(page, [w.replace("e-0", "e-") for w in want], "benchmarks.rst H100 section")


def test_the_page_quotes_the_constants_of_the_construction_and_the_bound() -> None:
    """The transparent-init page's "Draws smaller than 1 % of their scale" and hidden floor
    ``0.01 / \\sqrt{h}`` are ``MIN_ABS_FRACTION``, "more than 8 times the rounding bound" is
    ``REALIZE_SLACK``, the slack of "1000 float64 epsilons" is the reference's ``SOLVE_SLACK``, and the widest
    layers the bound covers ("254 inputs in bfloat16, 2046 in float16", ``(n + 1) u < 1``) follow from the
    dtypes' roundoff."""
    page = _flat("docs", "concepts", "transparent_init.rst")
    eps64 = torch.finfo(torch.float64).eps
    widest = {d: int(1 / (torch.finfo(d).eps / 2)) - 2 for d in (torch.bfloat16, torch.float16)}
    want = [
        f"Draws smaller than {MIN_ABS_FRACTION * 100:g} % of their scale are pushed",
        f":math:`{MIN_ABS_FRACTION:g} / \\sqrt{{h}}`, is itself below",
        f"misses some output by more than {REALIZE_SLACK:g} times the rounding bound",
        f":math:`{SOLVE_SLACK / eps64:.0f}` float64 epsilons",
        f"layers of at most {widest[torch.bfloat16]} inputs in bfloat16, :math:`u = 2^{{-8}}`, and "
        f"{widest[torch.float16]} in float16",
    ]
    _assert_quotes(page, want, "transparent_init.rst")
