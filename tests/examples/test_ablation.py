"""ablation.py end to end on tiny data (--quick --max-steps 2), its resume, refusals and summaries."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from examples.voc_joint import ablation

from ._exmodels_utils import tiny_voc  # noqa: F401  (fixture)


@pytest.fixture
def one_thread():
    """The runs use one thread (tiny tensors: threads only contend); the worker's setting is restored."""
    before = torch.get_num_threads()
    yield ["--threads", "1"]
    torch.set_num_threads(before)


def test_quick_ablation_end_to_end(tiny_voc, tmp_path, one_thread, monkeypatch, capsys) -> None:  # noqa: F811
    # without tqdm (a machine without the examples extra's progress bars): --no-progress must not import it
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    argv = [
        "--data-root", str(tiny_voc), "--output-dir", str(tmp_path), "--quick", "--max-steps", "2",
        "--seeds", "2", "--crop-size", "32", "--batch-size", "2", "--no-progress", *one_thread,
    ]  # fmt: skip
    res = ablation.main(argv)
    rows = res["rows"]
    assert res["complete"] and [(r["init"], r["seed"]) for r in rows] == [
        (v, s) for v in ablation.VARIANTS for s in (0, 1)
    ]
    for r in rows:
        assert set(r) >= {"init", "seed", "step0_miou", "miou", "boundary_miou", "curve"}
        assert set(r["boundary_miou"]) == {"1", "3", "5"} and r["steps"] == 2
        assert [p["step"] for p in r["curve"]] == [0, 1, 2]
        assert "miou" in r["curve"][0] and "miou" in r["curve"][-1] and r["curve"][-1]["miou"] == r["miou"]
        assert all(p["loss"] > 0 for p in r["curve"][1:])
    by = {(r["init"], r["seed"]): r for r in rows}
    for seed in (0, 1):  # step 0: the exact inits start at the uniformized pretrained output
        ref = by["no_fusion", seed]["step0_miou"]
        assert by["zero_residual", seed]["step0_miou"] == ref
        assert by["transparent", seed]["step0_miou"] == pytest.approx(ref, abs=1e-3)
    # the seed changes the fusion draws and the data order
    assert by["xavier", 0]["step0_miou"] != by["xavier", 1]["step0_miou"] or (
        by["xavier", 0]["curve"][1]["loss"] != by["xavier", 1]["curve"][1]["loss"]
    )
    assert by["no_fusion", 0]["curve"][1]["loss"] != by["no_fusion", 1]["curve"][1]["loss"]
    text = (tmp_path / "ablation.json").read_text()
    assert json.loads(text)["rows"] == json.loads(json.dumps(rows))  # strict JSON, as returned
    md = (tmp_path / "ablation.md").read_text()
    assert all(f"| {v} | 2 |" in md for v in ablation.VARIANTS) and "Paired differences" in md and " ± " in md
    assert (
        md.splitlines()[0]
        == f"# Fusion-initialization ablation (joint DeepLabV3+ + SpixelFCN, data: {tiny_voc})"
    )
    assert (tmp_path / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()

    # a finished ablation is not overwritten without --overwrite
    with pytest.raises(SystemExit) as info:
        ablation.main(argv)
    assert info.value.code == 2 and "holds a finished ablation" in capsys.readouterr().err

    # an unfinished one continues: the missing run is redone, bit-identical to the first time
    data = json.loads(text)
    missing = data["rows"].pop()
    data["complete"] = False
    (tmp_path / "ablation.json").write_text(json.dumps(data))
    again = ablation.main(argv)
    assert "continuing: 13 of 14 runs already done" in capsys.readouterr().out
    redone = json.loads(json.dumps(again["rows"][-1]))
    redone.pop("seconds"), missing.pop("seconds")
    assert redone == missing


def test_summary_and_markdown() -> None:
    def row(init: str, seed: int, m0: float, m: float) -> dict:
        return {"init": init, "seed": seed, "step0_miou": m0, "miou": m, "boundary_miou": {"3": m / 2}}

    rows = [row("transparent", 0, 0.3, 0.5), row("transparent", 1, 0.3, 0.6)]
    rows += [row("xavier", 0, 0.0, 0.45), row("xavier", 1, 0.0, 0.5), row("no_fusion", 0, 0.3, 0.55)]
    summary = {s["init"]: s for s in ablation.summarize(rows)}
    assert list(summary) == ["transparent", "xavier", "no_fusion"]  # table order
    x = summary["xavier"]
    assert x["step0_miou"] == (0.0, 0.0) and x["diff_step0_miou"] == (pytest.approx(-0.3), 0.0)
    assert x["diff_miou"][0] == pytest.approx(-0.075) and x["diff_miou"][1] == pytest.approx(0.0354, abs=1e-4)
    assert x["wins"] == 0 and x["paired_seeds"] == 2
    assert summary["no_fusion"]["miou"] == (0.55, None) and summary["no_fusion"]["wins"] == 1
    assert "diff_miou" not in summary["transparent"]
    settings = {"steps": 4, "val_images": 2, "joint_lr": 1e-3, "fusion_lr": 1e-4}
    md = ablation.format_markdown(list(summary.values()), settings)
    assert "| xavier | 2 | 0.0 ± 0.0 | 47.5 ± 3.5 | 23.8 ± 1.8 |" in md
    assert "| xavier | -30.0 ± 0.0 | -7.5 ± 3.5 | -3.7 ± 1.8 | 0/2 |" in md
    assert "| no_fusion | 1 | 30.0 | 55.0 | 27.5 |" in md
    assert md.startswith("# Fusion-initialization ablation (joint DeepLabV3+ + SpixelFCN, synthetic VOC)\n")
    md = ablation.format_markdown(list(summary.values()), settings, data="data: /d/VOC2012")
    assert md.startswith(
        "# Fusion-initialization ablation (joint DeepLabV3+ + SpixelFCN, data: /d/VOC2012)\n"
    )


def test_docs_page_shows_the_committed_result() -> None:
    """docs/examples/ablation.rst quotes the tables of the committed default run (benchmarks/results)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    data = json.loads((root / "benchmarks" / "results" / "ablation" / "ablation.json").read_text())
    assert data["complete"] and data["settings"]["steps"] == 40
    summary = ablation.summarize(data["rows"])
    assert [s["seeds"] for s in summary] == [3] * len(ablation.VARIANTS)
    page = (root / "docs" / "examples" / "ablation.rst").read_text()
    pm = ablation._pm
    for s in summary:
        cells = [pm(s["step0_miou"]), pm(s["miou"]), pm(s["boundary_miou"])]
        line = f"   {s['init']}, {s['seeds']}, {', '.join(cells)}\n"
        assert line in page, line
        if "diff_miou" in s:
            diffs = [pm(s[k], True) for k in ("diff_step0_miou", "diff_miou", "diff_boundary_miou")]
            line = f"   {s['init']}, {', '.join(diffs)}, {s['wins']}/{s['paired_seeds']}\n"
            assert line in page, line
    md = (root / "benchmarks" / "results" / "ablation" / "ablation.md").read_text()
    assert md == ablation.format_markdown(summary, data["settings"])


def test_quoted_run_times_agree_with_the_docs_and_the_committed_run() -> None:
    """--help, the module docstring and ablation.rst quote the measured time (ablation.json's seconds, the
    pretraining included), and the same --quick time."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    data = json.loads((root / "benchmarks" / "results" / "ablation" / "ablation.json").read_text())
    minutes = round(data["seconds"] / 60)
    page = (root / "docs" / "examples" / "ablation.rst").read_text()
    parser = ablation.build_parser()
    quick = next(a.help for a in parser._actions if "--quick" in a.option_strings)
    assert f"# ~{minutes} min on 2 CPU cores" in page and "3.3 min with its pretraining" in page
    assert (
        f"About {minutes} minutes on 2 CPU cores, pretraining included (--quick: about 3)"
        in parser.description
    )
    assert " ".join(ablation.__doc__.split()).count(f"about {minutes} minutes on 2 CPU cores") == 1
    assert quick.startswith("a 3-minute version")
