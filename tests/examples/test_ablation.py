"""ablation.py end to end on tiny data (--quick --max-steps 2), its resume, refusals and summaries."""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("torchvision")

from examples.voc_joint import ablation, ablation_report, train_options

from .helpers import assert_data_root_is_checked, run_example, untrained_checkpoints


@pytest.fixture
def one_thread():
    """The runs use one thread (tiny tensors: threads only contend); the worker's setting is restored."""
    before = torch.get_num_threads()
    yield ["--threads", "1"]
    torch.set_num_threads(before)


def test_quick_ablation_end_to_end(tiny_voc, tmp_path, one_thread, monkeypatch, capsys) -> None:
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
        (v, s) for v in ablation_report.VARIANTS for s in (0, 1)
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
    assert all(f"| {v} | 2 |" in md for v in ablation_report.VARIANTS)
    assert "Paired differences" in md and " ± " in md
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
    summary = {s["init"]: s for s in ablation_report.summarize(rows)}
    assert list(summary) == ["transparent", "xavier", "no_fusion"]  # table order
    x = summary["xavier"]
    assert x["step0_miou"] == (0.0, 0.0) and x["diff_step0_miou"] == (pytest.approx(-0.3), 0.0)
    assert x["diff_miou"][0] == pytest.approx(-0.075) and x["diff_miou"][1] == pytest.approx(0.0354, abs=1e-4)
    assert x["wins"] == 0 and x["paired_seeds"] == 2
    assert summary["no_fusion"]["miou"] == (0.55, None) and summary["no_fusion"]["wins"] == 1
    assert "diff_miou" not in summary["transparent"]
    settings = {"steps": 4, "val_images": 2, "joint_lr": 1e-3, "fusion_lr": 1e-4}
    md = ablation_report.format_markdown(list(summary.values()), settings)
    assert "| xavier | 2 | 0.0 ± 0.0 | 47.5 ± 3.5 | 23.8 ± 1.8 |" in md
    assert "| xavier | -30.0 ± 0.0 | -7.5 ± 3.5 | -3.7 ± 1.8 | 0/2 |" in md
    assert "| no_fusion | 1 | 30.0 | 55.0 | 27.5 |" in md
    assert md.startswith("# Fusion-initialization ablation (joint DeepLabV3+ + SpixelFCN, synthetic VOC)\n")
    md = ablation_report.format_markdown(list(summary.values()), settings, data="data: /d/VOC2012")
    assert md.startswith(
        "# Fusion-initialization ablation (joint DeepLabV3+ + SpixelFCN, data: /d/VOC2012)\n"
    )


@pytest.mark.parametrize(("folder", "seeds"), [("ablation", 3), ("ablation_10seeds", 10)])
def test_docs_page_shows_the_committed_result(folder: str, seeds: int) -> None:
    """docs/examples/ablation.rst quotes the tables of the committed default run and of the 10-seed run
    (benchmarks/results)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    data = json.loads((root / "benchmarks" / "results" / folder / "ablation.json").read_text())
    assert data["complete"] and data["settings"]["steps"] == 40
    summary = ablation_report.summarize(data["rows"])
    assert [s["seeds"] for s in summary] == [seeds] * len(ablation_report.VARIANTS)
    page = (root / "docs" / "examples" / "ablation.rst").read_text()
    pm = ablation_report._pm
    for s in summary:
        cells = [pm(s["step0_miou"]), pm(s["miou"]), pm(s["boundary_miou"])]
        line = f"   {s['init']}, {s['seeds']}, {', '.join(cells)}\n"
        assert line in page, line
        if "diff_miou" in s:
            diffs = [pm(s[k], True) for k in ("diff_step0_miou", "diff_miou", "diff_boundary_miou")]
            line = f"   {s['init']}, {', '.join(diffs)}, {s['wins']}/{s['paired_seeds']}\n"
            assert line in page, line
    md = (root / "benchmarks" / "results" / folder / "ablation.md").read_text()
    assert md == ablation_report.format_markdown(summary, data["settings"])


def test_docs_fusion_widths_table_shows_the_committed_runs() -> None:
    """The fusion-widths table of docs/examples/ablation.rst: each row's final mIoU and boundary mIoU are
    those of its committed run (``benchmarks/results/ablation_fusion_widths``), as ``ablation.md`` prints
    them. Two cells had drifted from their runs, rounded twice (31.5 ± 1.8 for 1.745, 31.8 for 31.746; an
    audit, 2026-12-06): this table was not checked."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    runs = root / "benchmarks" / "results" / "ablation_fusion_widths"

    def summary(folder: str, init: str = "transparent") -> dict:
        data = json.loads((runs / folder / "ablation.json").read_text())
        return next(s for s in ablation_report.summarize(data["rows"]) if s["init"] == init)

    page = (root / "docs" / "examples" / "ablation.rst").read_text()
    lines = page.splitlines()
    pm = ablation_report._pm
    rows = {
        "64 64 (the paper's)": summary("paper_64-64"),
        "42 42": summary("hidden_42-42"),
        "64": summary("hidden_64"),
        "no fusion (control)": summary("paper_64-64", "no_fusion"),
    }
    for name, s in rows.items():
        (line,) = [line for line in lines if line.startswith(f"   {name}, ")]
        cells = [cell.strip() for cell in line.split(",")]
        assert cells[2:4] == [pm(s["miou"]), pm(s["boundary_miou"])], (name, cells)


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


def _row(init: str, seed: int, m0: float, m: float) -> dict:
    """A finished run's row of ablation.json (one fine-tuning step)."""
    band = {"1": m / 2, "3": m / 2, "5": m / 2}
    return {
        "init": init, "seed": seed, "step0_miou": m0, "miou": m, "boundary_miou": band,
        "step0_boundary_miou": band, "consistency": 1.0, "steps": 1, "seconds": 1.0,
        "curve": [{"step": 0, "miou": m0}, {"step": 1, "loss": 1.5, "miou": m}],
    }  # fmt: skip


def test_summary_pairs_by_seed_and_counts_strict_wins() -> None:
    """Differences pair a variant's seeds with transparent's same seeds only; a tie is not a win; variants
    without a paired seed get no difference; unknown variants come last instead of being dropped."""
    rows = [_row("transparent", 0, 0.3, 0.5), _row("transparent", 1, 0.3, 0.6)]
    rows += [_row("xavier", 1, 0.0, 0.6), _row("xavier", 2, 0.0, 0.9)]  # seed 2: transparent has none
    rows += [_row("kaiming", 7, 0.0, 0.2), _row("no_fusion", 0, 0.3, 0.55), _row("custom", 0, 0.3, 0.4)]
    summary = {s["init"]: s for s in ablation_report.summarize(rows)}
    assert list(summary) == ["transparent", "xavier", "kaiming", "no_fusion", "custom"]
    x = summary["xavier"]
    assert x["seeds"] == 2 and x["miou"][0] == pytest.approx(0.75)
    assert x["paired_seeds"] == 1 and x["diff_miou"] == (pytest.approx(0.0), None) and x["wins"] == 0
    assert "diff_miou" not in summary["kaiming"] and "wins" not in summary["kaiming"]
    assert summary["no_fusion"]["wins"] == 1 and summary["custom"]["diff_miou"][0] == pytest.approx(-0.1)
    md = ablation_report.format_markdown(
        list(summary.values()), {"steps": 1, "val_images": 2, "joint_lr": 1e-3, "fusion_lr": 1e-4}
    )
    assert "| no_fusion | +0.0 | +5.0 | +2.5 | 1/1 |" in md and "| xavier | -30.0 | +0.0 | +0.0 | 0/1 |" in md
    assert "2 seeds per row" in md  # the most seeds of any row


def test_unset_options_come_from_quick_or_the_defaults() -> None:
    parse = ablation.build_parser().parse_args
    quick = ablation.resolve(parse(["--quick"]))
    assert {k: getattr(quick, k) for k in ablation.QUICK} == ablation.QUICK
    assert quick.run_steps == ablation.QUICK["steps"]
    full = ablation.resolve(parse([]))
    assert {k: getattr(full, k) for k in ablation.DEFAULTS} == ablation.DEFAULTS
    assert ablation.resolve(parse(["--quick", "--steps", "5"])).steps == 5  # a given option wins
    assert ablation.resolve(parse(["--steps", "5", "--max-steps", "100"])).run_steps == 5  # a cap only lowers
    assert ablation.resolve(parse(["--steps", "5", "--max-steps", "2"])).run_steps == 2


@pytest.mark.parametrize("variant", ablation_report.VARIANTS)
def test_each_variant_trains_what_its_name_says(variant: str) -> None:

    args = train_options.build_parser().parse_args(ablation.variant_options(variant))
    if variant == "no_superpixels":
        assert (args.mode, args.fusion) == ("none", False)
    elif variant == "no_fusion":
        assert (args.mode, args.fusion) == ("hard", False)
    else:
        assert (args.mode, args.fusion, args.fusion_init) == ("hard", True, variant)
    assert args.fusion_hidden == [64, 64]  # the training CLI's default
    # other widths go to the fusion inits only: the training CLI refuses --fusion-hidden with --no-fusion
    options = ablation.variant_options(variant, [48])
    assert ("--fusion-hidden" in options) == (variant in ablation.FUSION_INITS)
    args = train_options.build_parser().parse_args(options)
    assert args.fusion_hidden == ([48] if variant in ablation.FUSION_INITS else [64, 64])
    with pytest.raises(ValueError, match="variant must be one of"):
        ablation.variant_options("glorot")


def _small_argv(root, out, seg, spx, threads) -> list[str]:
    return [
        "--data-root", str(root), "--output-dir", str(out), "--seg-checkpoint", str(seg),
        "--spixel-checkpoint", str(spx), "--variants", "no_fusion", "--seeds", "1", "--crop-size", "32",
        "--batch-size", "2", "--no-progress", *threads,
    ]  # fmt: skip


def _scores(miou: float) -> dict[str, Any]:
    """What ``evaluate.evaluate`` returns, with one score ``miou`` for the mIoU and every boundary band."""
    return {"miou": miou, "boundary_miou": dict.fromkeys(("1", "3", "5"), miou), "consistency": 1.0}


def _faked_ablation_argv(
    tiny_voc: Path,
    tmp_path: Path,
    one_thread: list[str],
    monkeypatch: pytest.MonkeyPatch,
    fake_evaluate: Callable[..., dict[str, Any]],
) -> list[str]:
    """The command line of a small ablation (:func:`_small_argv`, variant ``no_fusion``) over untrained
    checkpoints, with the evaluation replaced by ``fake_evaluate`` and the figure not drawn (it is tested on
    its own)."""
    from examples.voc_joint import evaluate

    monkeypatch.setattr(evaluate, "evaluate", fake_evaluate)
    monkeypatch.setattr(ablation, "plot", lambda rows, path, title="": path)
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    return _small_argv(tiny_voc, tmp_path / "abl", seg, spx, one_thread)


def test_a_users_data_gets_the_training_clis_checks(tiny_voc, tmp_path, one_thread, capsys) -> None:
    """With --data-root, a training split holding validation images is refused (exit 2) and listed files that
    do not exist are named (exit 1), before the output folder is made: train.py's checks."""
    import shutil

    seg, spx = untrained_checkpoints(tmp_path / "ck")
    root = tmp_path / "voc"
    shutil.copytree(tiny_voc, root)
    out = tmp_path / "abl"
    argv = [*_small_argv(root, out, seg, spx, one_thread), "--max-steps", "1"]
    assert_data_root_is_checked(lambda: ablation.main(argv), root, capsys)
    assert not out.exists()


def test_unfinished_run_with_other_settings_refused(tiny_voc, tmp_path, one_thread, capsys) -> None:
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    out = tmp_path / "abl"
    out.mkdir()
    stale = json.dumps({"settings": {"steps": 99}, "complete": False, "rows": []})
    (out / "ablation.json").write_text(stale)
    with pytest.raises(SystemExit) as info:
        ablation.main([*_small_argv(tiny_voc, out, seg, spx, one_thread), "--max-steps", "1"])
    assert info.value.code == 2
    assert "holds an unfinished ablation with other settings" in capsys.readouterr().err
    assert (out / "ablation.json").read_text() == stale


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (b"", "not JSON: Expecting value: line 1 column 1 (char 0)"),
        (b'{"complete": false, "rows": [', "not JSON: Expecting value"),
        (b"\xff\xfe", "not JSON: 'utf-8' codec can't decode byte 0xff"),
        (b"[1]", "a JSON array, not an object"),
        (b"null", "a JSON null, not an object"),
    ],
    ids=["empty", "cut-short", "not-utf8", "array", "null"],
)
def test_an_unreadable_ablation_json_is_one_error_line(
    tiny_voc, tmp_path, one_thread, capsys, content, found
) -> None:
    """An ablation.json that holds no JSON object (an empty or cut-short file: not one this script writes,
    atomically) was a JSONDecodeError or AttributeError traceback (exit status 1). It is one error line
    naming the file and what it holds, exit status 2, the file untouched; --overwrite replaces it."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    out = tmp_path / "abl"
    out.mkdir()
    (out / "ablation.json").write_bytes(content)
    argv = [*_small_argv(tiny_voc, out, seg, spx, one_thread), "--max-steps", "1"]
    with pytest.raises(SystemExit) as info:
        ablation.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(
        f"python examples/voc_joint/ablation.py: error: {out / 'ablation.json'} is not an ablation's record "
        f"({found}"
    ), err
    assert err.endswith("; --overwrite replaces it, or choose another --output-dir (nothing was changed)\n")
    assert (out / "ablation.json").read_bytes() == content
    res = ablation.main([*argv, "--overwrite"])
    assert res["complete"] and [r["init"] for r in res["rows"]] == ["no_fusion"]
    capsys.readouterr()


def test_unfinished_run_of_another_torch_version_names_the_difference(
    tiny_voc, tmp_path, one_thread, capsys
) -> None:
    """An unfinished ablation is continued only with the same settings, the torch version among them (its runs
    would mix two releases' kernels); the refusal names each differing setting with both values."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    out = tmp_path / "abl"
    argv = [*_small_argv(tiny_voc, out, seg, spx, one_thread), "--max-steps", "1"]
    ablation.main(argv)
    record = json.loads((out / "ablation.json").read_text())
    record["complete"], record["settings"]["torch"] = False, "2.0.0"
    (out / "ablation.json").write_text(json.dumps(record))
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        ablation.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "holds an unfinished ablation with other settings" in err, err
    assert f"torch: '2.0.0' (unfinished ablation) -> '{torch.__version__}' (now)" in err, err
    assert "steps:" not in err, err  # only what differs


def test_continuing_after_longer_pretraining_is_refused_before_it_trains(
    tiny_voc, tmp_path, one_thread, capsys
) -> None:
    """An unfinished ablation was continued after a larger --seg-epochs: the pretraining (reused with
    --resume) trained the DeepLabV3+ further in place, and the rows of two pretrained networks were mixed into
    a "complete" ablation. The epochs are settings now, compared before the pretraining runs: refused, the
    pretrained checkpoint untouched."""
    out = tmp_path / "abl"
    argv = ["--data-root", str(tiny_voc), "--output-dir", str(out), "--spixel-epochs", "1", "--steps", "1"]
    argv += ["--eval-every", "1", "--seeds", "1", "--variants", "no_fusion", "--max-val-images", "1"]
    argv += ["--crop-size", "32", "--batch-size", "2", "--no-progress", *one_thread]
    first = ablation.main([*argv, "--seg-epochs", "1"])
    assert first["settings"]["seg_epochs"] == 1 and len(first["settings"]["seg_checkpoint_sha256"]) == 64
    record = json.loads((out / "ablation.json").read_text())
    record["complete"] = False  # as if stopped before its last run
    (out / "ablation.json").write_text(json.dumps(record))
    seg = out / "pretrain" / "seg" / "checkpoint.pt"
    before = seg.read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        ablation.main([*argv, "--seg-epochs", "3"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "holds an unfinished ablation with other settings" in err, err
    assert "seg_epochs: 1 (unfinished ablation) -> 3 (now)" in err, err
    assert seg.read_bytes() == before  # not trained further


def test_a_pretraining_left_without_ablation_json_is_reused_only_with_its_options(
    tiny_voc, tmp_path, one_thread, capsys
) -> None:
    """An ablation stopped after its pretraining but before its first run finished leaves pretrain/ and no
    ablation.json. Rerun with a larger --seg-epochs, the finished pretraining was trained further in place
    (the training CLI's --resume grows --epochs) and ablation.json recorded the new epochs for it; a smaller
    one was refused with the training CLI's --epochs and its --allow-option-changes, which ablation.py lacks.
    Both are refused now, naming the ablation's options; the pretraining is reused with its own."""
    out = tmp_path / "abl"
    argv = ["--data-root", str(tiny_voc), "--output-dir", str(out), "--spixel-epochs", "1", "--steps", "1"]
    argv += ["--eval-every", "1", "--seeds", "1", "--variants", "no_fusion", "--max-val-images", "1"]
    argv += ["--crop-size", "32", "--batch-size", "2", "--no-progress", *one_thread]
    first = ablation.main([*argv, "--seg-epochs", "1"])
    (out / "ablation.json").unlink()  # as if stopped in its first run
    seg = out / "pretrain" / "seg" / "checkpoint.pt"
    before = seg.read_bytes()
    capsys.readouterr()
    for epochs in ("2", "1 --max-steps 1", "1 --threads 2"):
        with pytest.raises(SystemExit) as info:
            ablation.main([*argv, "--seg-epochs", *epochs.split()])
        err = capsys.readouterr().err
        assert info.value.code == 2, err
        assert f"error: {out / 'pretrain'} holds a pretraining with other options" in err, err
        if epochs == "2":
            assert f"  --seg-epochs: 1 ({seg}) -> 2 (now)\n" in err, err
        elif "--threads" in epochs:  # (accepted before: ablation.json recorded 2 threads for a pretraining
            # done with 1, its rows those of neither)
            spixel = out / "pretrain" / "spixel" / "checkpoint.pt"
            assert f"  --threads: 1 ({seg}) -> 2 (now)\n  --threads: 1 ({spixel}) -> 2 (now)\n" in err, err
        else:
            assert f"  --max-steps: None ({seg}) -> 1 (now)\n" in err, err
        assert err.endswith(
            "--overwrite to pretrain again, or choose another --output-dir (nothing was changed)\n"
        )
        assert seg.read_bytes() == before and not (out / "ablation.json").exists()
    with pytest.raises(SystemExit) as info:  # refused by the training CLI: its advice is replaced
        ablation.main([*("40" if a == "32" else a for a in argv), "--seg-epochs", "1"])  # --crop-size 40
    err = capsys.readouterr().err
    assert info.value.code == 2 and "  --crop-size: 32 (checkpoint) -> 40 (now)\n" in err, err
    assert "--allow-option-changes" not in err and "--overwrite to pretrain again" in err, err
    again = ablation.main([*argv, "--seg-epochs", "1"])  # its own options: reused as it is
    assert seg.read_bytes() == before
    assert again["settings"]["seg_checkpoint_sha256"] == first["settings"]["seg_checkpoint_sha256"]
    assert again["rows"][0]["miou"] == first["rows"][0]["miou"]
    capsys.readouterr()


def test_continuing_with_a_replaced_checkpoint_file_is_refused(
    tiny_voc, tmp_path, one_thread, capsys
) -> None:
    """A --seg-checkpoint file replaced by other weights between two runs of an unfinished ablation was not
    noticed (the settings held its path only): its SHA-256 is a setting now, and the refusal names it."""
    from examples.voc_joint.checkpoint import load_checkpoint, save_checkpoint

    seg, spx = untrained_checkpoints(tmp_path / "ck")
    out = tmp_path / "abl"
    argv = [*_small_argv(tiny_voc, out, seg, spx, one_thread), "--max-steps", "1"]
    ablation.main(argv)
    record = json.loads((out / "ablation.json").read_text())
    record["complete"] = False
    (out / "ablation.json").write_text(json.dumps(record))
    ckpt = load_checkpoint(seg)
    ckpt["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    save_checkpoint(seg, ckpt)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        ablation.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "holds an unfinished ablation with other settings" in err, err
    assert f"seg_checkpoint_sha256: '{record['settings']['seg_checkpoint_sha256']}'" in err, err
    assert "spixel_checkpoint_sha256" not in err and "seg_checkpoint:" not in err, err


def test_continuing_compares_the_folders_and_files_the_paths_name(
    tiny_voc, tmp_path, one_thread, monkeypatch, capsys
) -> None:
    """The settings recorded --data-root and the checkpoints as typed: continued from another working folder,
    a relative --data-root naming another data set was taken as the same (rows of two data sets mixed), and
    the same folder or file named another way was refused. They are recorded and compared as absolute paths; a
    relative path of an earlier ablation.json is taken relative to the current folder."""
    import shutil

    for name in ("a", "b"):
        shutil.copytree(tiny_voc, tmp_path / name / "voc")
    untrained_checkpoints(tmp_path / "ck")
    out = tmp_path / "abl"
    abs_ck = [tmp_path / "ck" / "seg" / "checkpoint.pt", tmp_path / "ck" / "spixel" / "checkpoint.pt"]

    def argv(root, seg, spx):
        return [*_small_argv(root, out, seg, spx, one_thread), "--max-steps", "1"]

    def unfinished(**settings) -> None:
        record = json.loads((out / "ablation.json").read_text())
        record["complete"] = False
        record["settings"].update(settings)
        (out / "ablation.json").write_text(json.dumps(record))

    monkeypatch.chdir(tmp_path / "a")
    ablation.main(argv("voc", *(f"../ck/{s}/checkpoint.pt" for s in ("seg", "spixel"))))
    settings = json.loads((out / "ablation.json").read_text())["settings"]
    assert settings["data_root"] == str((tmp_path / "a" / "voc").resolve())
    assert settings["seg_checkpoint"] == str(abs_ck[0].resolve())
    unfinished()
    capsys.readouterr()
    monkeypatch.chdir(tmp_path / "b")  # the same words, another data set
    with pytest.raises(SystemExit) as info:
        ablation.main(argv("voc", *abs_ck))
    err = capsys.readouterr().err
    assert info.value.code == 2 and "holds an unfinished ablation with other settings" in err, err
    assert f"data_root: '{tmp_path / 'a' / 'voc'}' (unfinished ablation) -> '{tmp_path / 'b' / 'voc'}'" in err
    monkeypatch.chdir(tmp_path)  # the same folder and files, named another way: continued
    res = ablation.main(argv("a/voc", "ck/seg/checkpoint.pt", "ck/spixel/checkpoint.pt"))
    assert res["complete"] and [r["init"] for r in res["rows"]] == ["no_fusion"]
    # an ablation.json of an earlier version, with the paths as typed: relative to the current folder
    unfinished(data_root="voc", seg_checkpoint="../ck/seg/checkpoint.pt")
    monkeypatch.chdir(tmp_path / "a")
    assert ablation.main(argv(tmp_path / "a" / "voc", *abs_ck))["complete"]
    capsys.readouterr()


def test_continuing_keeps_only_the_planned_runs(tiny_voc, tmp_path, one_thread, capsys) -> None:
    """An unfinished ablation whose planned runs are all done finishes without training; rows of variants no
    longer asked for are left out of the summary, said so and kept in ablation.json under ``left_out``."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    out = tmp_path / "abl"
    out.mkdir()
    argv = [*_small_argv(tiny_voc, out, seg, spx, one_thread), "--max-steps", "1"]
    opts = ablation.resolve(ablation.build_parser().parse_args(argv))
    opts.cell_size = ablation.check_pretrained(seg, spx)  # as run_ablation does with given checkpoints
    settings = ablation._settings(opts, tiny_voc, seg, spx, 2)
    rows = [_row("no_fusion", 0, 0.3, 0.5), _row("xavier", 0, 0.0, 0.4)]
    (out / "ablation.json").write_text(json.dumps({"settings": settings, "complete": False, "rows": rows}))
    res = ablation.main(argv)
    assert res["complete"] and [(r["init"], r["seed"]) for r in res["rows"]] == [("no_fusion", 0)]
    assert [s["init"] for s in res["summary"]] == ["no_fusion"]
    assert "xavier" not in (out / "ablation.md").read_text()
    assert [(r["init"], r["seed"]) for r in res["left_out"]] == [("xavier", 0)]
    kept = json.loads((out / "ablation.json").read_text())["left_out"]
    assert [(r["init"], r["seed"], r["miou"]) for r in kept] == [("xavier", 0, 0.4)]
    out_text = capsys.readouterr().out
    assert "1 finished run is not in this plan (xavier seed 0)" in out_text, out_text
    assert (
        "[ablation] 0 fine-tuning runs (1 variant x 1 seed) of 1 step; evaluation on 2 validation images"
        in out_text
    ), out_text


@pytest.mark.parametrize("finished", [False, True])
def test_continuing_reuses_the_runs_an_earlier_plan_left_out(
    tiny_voc, tmp_path, one_thread, capsys, finished
) -> None:
    """Runs that a continuation with fewer variants left out (ablation.json's ``left_out``) are reused when a
    later continuation asks for them again: nothing is trained, both rows are in the result. Also once that
    narrower continuation had finished (``complete``): the original command was refused as "a finished
    ablation", and only --overwrite, which deletes the runs, was left."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    out = tmp_path / "abl"
    out.mkdir()
    argv = [*_small_argv(tiny_voc, out, seg, spx, one_thread), "--max-steps", "1"]
    at = argv.index("no_fusion")
    argv[at : at + 1] = ["no_fusion", "xavier"]  # --variants no_fusion xavier
    opts = ablation.resolve(ablation.build_parser().parse_args(argv))
    opts.cell_size = ablation.check_pretrained(seg, spx)
    settings = ablation._settings(opts, tiny_voc, seg, spx, 2)
    previous = {
        "settings": settings,
        "complete": finished,
        "rows": [_row("no_fusion", 0, 0.3, 0.5)],
        "left_out": [_row("xavier", 0, 0.0, 0.4)],
    }
    (out / "ablation.json").write_text(json.dumps(previous))
    res = ablation.main(argv)
    assert res["complete"] and "left_out" not in res
    assert sorted((r["init"], r["seed"], r["miou"]) for r in res["rows"]) == [
        ("no_fusion", 0, 0.5),
        ("xavier", 0, 0.4),
    ]
    text = capsys.readouterr().out
    assert "fine-tuning runs" in text
    assert ("holds a finished ablation without 1 run of this plan: continuing it" in text) == finished, text
    with pytest.raises(SystemExit) as info:  # now finished with every run of the plan: refused
        ablation.main(argv)
    assert info.value.code == 2
    assert "holds a finished ablation (" in capsys.readouterr().err
    more = [*argv[: argv.index("--seeds")], "--seeds", "2", *argv[argv.index("--seeds") + 2 :]]
    other = list(more)
    other[other.index("--crop-size") + 1] = "48"
    with pytest.raises(SystemExit) as info:  # more seeds with other settings: refused, naming them
        ablation.main(other)
    said = capsys.readouterr()
    assert info.value.code == 2 and "holds a finished ablation with other settings" in said.err, said.err
    assert "  crop_size: 32 (finished ablation) -> 48 (now)" in said.err, said.err
    assert "continuing it" not in said.out, said.out  # (it said so before refusing)
    res = ablation.main(more)  # with the same settings: the two new runs are trained, the others reused
    assert "without 2 runs of this plan: continuing it" in capsys.readouterr().out
    assert sorted((r["init"], r["seed"]) for r in res["rows"]) == [
        ("no_fusion", 0),
        ("no_fusion", 1),
        ("xavier", 0),
        ("xavier", 1),
    ]


def test_continuing_reads_nan_scores_back_from_strict_json(tiny_voc, tmp_path, one_thread, capsys) -> None:
    """A NaN score (a boundary band without a valid pixel) is written to ablation.json as null (strict JSON);
    continuing the ablation reads it back as NaN: the summary, ablation.md and the figure are written (the
    summary raised TypeError on the null)."""
    from examples.voc_joint.metrics import dumps

    seg, spx = untrained_checkpoints(tmp_path / "ck")
    out = tmp_path / "abl"
    out.mkdir()
    argv = [*_small_argv(tiny_voc, out, seg, spx, one_thread), "--max-steps", "1"]
    opts = ablation.resolve(ablation.build_parser().parse_args(argv))
    opts.cell_size = ablation.check_pretrained(seg, spx)
    settings = ablation._settings(opts, tiny_voc, seg, spx, 2)
    row = _row("no_fusion", 0, 0.3, 0.5)
    row["boundary_miou"] = {**row["boundary_miou"], "3": float("nan")}
    row["curve"][0]["miou"] = float("nan")
    (out / "ablation.json").write_text(dumps({"settings": settings, "complete": False, "rows": [row]}))
    assert "NaN" not in (out / "ablation.json").read_text()  # strict JSON: null
    res = ablation.main(argv)
    (summary,) = res["summary"]
    assert summary["miou"][0] == pytest.approx(0.5) and math.isnan(summary["boundary_miou"][0])
    assert "nan" in (out / "ablation.md").read_text() and (out / "ablation.png").is_file()
    assert json.loads((out / "ablation.json").read_text())["rows"][0]["boundary_miou"]["3"] is None
    capsys.readouterr()


def test_a_nan_score_among_several_seeds_gives_a_nan_spread() -> None:
    """A NaN score of one seed (a boundary band without a valid pixel) makes the mean, the sample std and the
    paired difference of its column NaN, shown as ``nan``, and leaves the other columns alone
    (statistics.stdev raised AttributeError on a NaN, ValueError on Python 3.10, with two seeds or more)."""
    rows = [_row("transparent", s, 0.3, m) for s, m in enumerate((0.5, 0.6, 0.7))]
    rows += [_row("xavier", s, 0.0, m) for s, m in enumerate((0.4, 0.4, 0.7))]
    rows[1]["boundary_miou"] = {**rows[1]["boundary_miou"], "3": float("nan")}  # transparent, seed 1
    rows[5]["miou"] = float("nan")  # xavier, seed 2
    t, x = ablation_report.summarize(rows)
    assert t["miou"] == (pytest.approx(0.6), pytest.approx(0.1))
    assert all(math.isnan(v) for v in (*t["boundary_miou"], *x["miou"], *x["diff_miou"]))
    assert all(math.isnan(v) for v in x["diff_boundary_miou"])
    assert x["diff_step0_miou"] == (pytest.approx(-0.3), pytest.approx(0.0)) and x["wins"] == 0
    settings = {"steps": 1, "val_images": 2, "joint_lr": 1e-3, "fusion_lr": 1e-4}
    md = ablation_report.format_markdown([t, x], settings)
    assert "| transparent | 3 | 30.0 ± 0.0 | 60.0 ± 10.0 | nan ± nan |" in md
    assert "| xavier | 3 | 0.0 ± 0.0 | nan ± nan | 25.0 ± 8.7 |" in md
    assert "| xavier | -30.0 ± 0.0 | +nan ± nan | +nan ± nan | 0/3 |" in md


def test_continuing_with_a_nan_score_over_two_seeds_finishes(tiny_voc, tmp_path, one_thread, capsys) -> None:
    """An unfinished ablation of two seeds, one with a NaN boundary score (null in ablation.json), finishes:
    its summary has a NaN spread where it raised AttributeError (statistics.stdev) and wrote nothing."""
    from examples.voc_joint.metrics import dumps

    seg, spx = untrained_checkpoints(tmp_path / "ck")
    out = tmp_path / "abl"
    out.mkdir()
    argv = [*_small_argv(tiny_voc, out, seg, spx, one_thread), "--max-steps", "1", "--seeds", "2"]
    opts = ablation.resolve(ablation.build_parser().parse_args(argv))
    opts.cell_size = ablation.check_pretrained(seg, spx)
    settings = ablation._settings(opts, tiny_voc, seg, spx, 2)
    rows = [_row("no_fusion", 0, 0.3, 0.5), _row("no_fusion", 1, 0.3, 0.7)]
    rows[1]["boundary_miou"] = {**rows[1]["boundary_miou"], "3": float("nan")}
    (out / "ablation.json").write_text(dumps({"settings": settings, "complete": False, "rows": rows}))
    res = ablation.main(argv)
    (summary,) = res["summary"]
    assert summary["miou"] == (pytest.approx(0.6), pytest.approx(0.1414, abs=1e-4))
    assert all(math.isnan(v) for v in summary["boundary_miou"])
    assert "| no_fusion | 2 | 30.0 ± 0.0 | 60.0 ± 14.1 | nan ± nan |" in (out / "ablation.md").read_text()
    assert res["complete"] and (out / "ablation.png").is_file()
    capsys.readouterr()


def test_a_diverged_run_is_one_error_line_and_keeps_the_finished_runs(
    tiny_voc, tmp_path, one_thread, capsys
) -> None:
    """A fine-tuning run that diverges (xavier with --fusion-lr 1e6: non-finite gradients, the engine's
    NonFiniteError) ends the ablation with one error line and exit status 1, the run finished before it kept
    in ablation.json (the same command continues); that was a NonFiniteError traceback. The line names the run
    and says what the ablation keeps: it said "the last checkpoint on disk is the last good state" and "try
    without --amp", but the runs keep no checkpoint and the ablation has no --amp."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    out = tmp_path / "abl"
    argv = [*_small_argv(tiny_voc, out, seg, spx, one_thread), "--max-steps", "3", "--fusion-lr", "1e6"]
    argv[argv.index("no_fusion") + 1 : argv.index("no_fusion") + 1] = ["xavier"]
    with pytest.raises(SystemExit) as info:
        ablation.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 1 and err.count("\n") == 1, err
    assert err.startswith(
        "python examples/voc_joint/ablation.py: error: [ablation] run xavier, seed 0: non-finite "
    ), err
    assert f"the runs finished before it are in {out / 'ablation.json'}" in err, err
    assert "checkpoint" not in err and "--amp" not in err, err
    saved = json.loads((out / "ablation.json").read_text())
    assert not saved["complete"] and [(r["init"], r["seed"]) for r in saved["rows"]] == [("no_fusion", 0)]


def test_evaluations_every_n_steps_and_at_the_end(tiny_voc, tmp_path, one_thread, capsys) -> None:
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    argv = _small_argv(tiny_voc, tmp_path / "abl", seg, spx, one_thread)
    res = ablation.main([*argv, "--steps", "3", "--eval-every", "2"])
    (row,) = res["rows"]
    assert [p["step"] for p in row["curve"]] == [0, 1, 2, 3]
    assert [p["step"] for p in row["curve"] if "miou" in p] == [0, 2, 3]
    capsys.readouterr()


def test_the_machine_record_names_the_cpu_and_the_commit_the_runs_started_from(
    tiny_voc, tmp_path, one_thread, monkeypatch, capsys
) -> None:
    """ablation.json records the commit read once at the start (it was read at every save, so a commit made
    during a long run was recorded as the code that ran) and the CPU model."""
    commits = iter(["c0ffee1", "beef002", "dead003", "f00d004"])
    monkeypatch.setattr(ablation, "_commit", lambda: next(commits))
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    argv = _small_argv(tiny_voc, tmp_path / "abl", seg, spx, one_thread)
    res = ablation.main([*argv, "--seeds", "2", "--steps", "1"])  # two runs: two saves, then the final one
    machine = json.loads((tmp_path / "abl" / "ablation.json").read_text())["machine"]
    assert machine["commit"] == res["machine"]["commit"] == "c0ffee1"
    assert machine["cpu"] == ablation._cpu_model() and machine["cpus"] >= 1
    capsys.readouterr()


def _curve_row(init: str, seed: int, miou: list[float], loss: list[float]) -> dict:
    """A run of ``len(loss)`` steps evaluated at steps 0, 2, 4, ... (``miou``)."""
    curve = [{"step": 0, "miou": miou[0]}]
    for step, value in enumerate(loss, 1):
        curve.append({"step": step, "loss": value, **({"miou": miou[step // 2]} if step % 2 == 0 else {})})
    return {"init": init, "seed": seed, "curve": curve}


def _drawn_figures(monkeypatch) -> list:
    """The matplotlib figures that ``plot`` saves from now on (appended as each is saved)."""
    from matplotlib.figure import Figure

    figures = []
    savefig = Figure.savefig

    def recorded(fig, *args, **kwargs):
        figures.append(fig)
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recorded)
    return figures


def test_plot_leaves_the_backend_and_pyplot_alone(tmp_path, monkeypatch) -> None:
    """``plot`` called ``matplotlib.use("Agg")``: the backend of the whole process switched (a notebook's
    inline figures, an interactive session's windows). It draws on a Figure of its own, without pyplot."""
    import matplotlib
    import matplotlib.pyplot as plt

    def refuse(*args, **kwargs):
        raise AssertionError("plot switched the backend or drew through pyplot")

    monkeypatch.setattr(matplotlib, "use", refuse)
    for name in ("figure", "subplots", "gcf"):
        monkeypatch.setattr(plt, name, refuse)
    figures = plt.get_fignums()
    rows = [_curve_row(v, s, [0.3, 0.4], [2.0, 1.0]) for v in ("transparent", "xavier") for s in (0, 1)]
    path = ablation_report.plot(rows, tmp_path / "ablation.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plt.get_fignums() == figures


def test_plot_draws_means_paired_differences_smoothed_losses_and_seed_bands(tmp_path, monkeypatch) -> None:
    """ablation.png from its matplotlib objects: per init one mIoU line (mean over seeds, in %), one line
    of the paired difference to transparent (same seeds only; none for transparent), one loss line (mean of
    the seeds' 5-step running means), the controls dashed, the seeds' range shaded for 2+ seeds."""
    import numpy as np

    figures = _drawn_figures(monkeypatch)
    loss = {0: [4.0, 1.0, 3.0, 2.0], 1: [2.0, 2.0, 1.0, 5.0], 2: [1.0, 1.0, 1.0, 1.0]}
    rows = [_curve_row("transparent", s, [0.3, 0.4, 0.5 + 0.1 * s], loss[s]) for s in (0, 1)]
    rows += [_curve_row("xavier", s, [0.0, 0.1 * s, 0.2 + 0.1 * s], loss[s]) for s in (0, 1, 2)]
    rows += [_curve_row("no_fusion", 0, [0.3, 0.3, 0.45], loss[2])]
    path = ablation_report.plot(rows, tmp_path / "ablation.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (fig,) = figures
    ax_m, ax_d, ax_l = fig.axes[:3]
    smooth = {s: [np.mean(v[max(0, i - 2) : i + 3]) for i in range(4)] for s, v in loss.items()}

    lines = {line.get_label(): line for line in ax_m.get_lines()}
    assert list(lines) == ["transparent (2 seeds)", "xavier (3 seeds)", "no_fusion (1 seed)"]
    assert list(lines["xavier (3 seeds)"].get_xdata()) == [0, 2, 4]
    assert np.allclose(lines["xavier (3 seeds)"].get_ydata(), [0.0, 10.0, 30.0])
    assert np.allclose(lines["transparent (2 seeds)"].get_ydata(), [30.0, 40.0, 55.0])
    assert [line.get_linestyle() for line in lines.values()] == ["-", "-", "--"]

    diffs = [line for line in ax_d.get_lines() if len(line.get_xdata()) == 3]  # not the zero line
    assert len(diffs) == 2  # xavier, no_fusion: transparent has no difference to itself
    assert np.allclose(diffs[0].get_ydata(), [-30.0, -35.0, -30.0])  # seeds 0 and 1 only
    assert np.allclose(diffs[1].get_ydata(), [0.0, -10.0, -5.0])

    losses = ax_l.get_lines()
    assert len(losses) == 3 and list(losses[1].get_xdata()) == [1, 2, 3, 4]
    assert np.allclose(losses[1].get_ydata(), np.mean([smooth[0], smooth[1], smooth[2]], axis=0))
    assert np.allclose(losses[2].get_ydata(), smooth[2])

    def band(ax, k: int) -> tuple[float, float]:
        y = ax.collections[k].get_paths()[0].vertices[:, 1]
        return float(y.min()), float(y.max())

    assert len(ax_m.collections) == 2 and len(ax_d.collections) == 1 and len(ax_l.collections) == 2
    assert band(ax_m, 1) == pytest.approx((0.0, 40.0))  # xavier's seeds: min and max over the steps
    assert band(ax_d, 0) == pytest.approx((-40.0, -30.0))
    low, high = np.min([smooth[s] for s in loss], axis=0), np.max([smooth[s] for s in loss], axis=0)
    assert band(ax_l, 1) == pytest.approx((low.min(), high.max()))


def test_a_failed_figure_write_leaves_the_earlier_figure_and_no_temporary_file(tmp_path, monkeypatch) -> None:
    """``plot`` wrote ablation.png in place (savefig): a full disk while it redrew a figure (a continued
    ablation, ``redraw_figure``) left a cut PNG where the earlier one was. It writes a temporary file renamed
    into place, and leaves no pyplot figure open either way."""
    import errno

    import matplotlib.pyplot as plt
    from PIL import Image

    rows = [_curve_row("transparent", 0, [0.3, 0.4], [2.0, 1.0])]
    path = ablation_report.plot(rows, tmp_path / "ablation.png", title="t")
    before = path.read_bytes()
    Image.init()

    def cut(im, fp, filename, **kwargs):
        fp.write(b"\x89PNG\r\n\x1a\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(Image.SAVE, "PNG", cut)
    figures = plt.get_fignums()
    with pytest.raises(OSError, match="No space left"):
        ablation_report.plot(rows, path, title="t")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ablation.png"]
    assert plt.get_fignums() == figures


def test_plot_refuses_no_rows_and_draws_a_run_of_one_step(tmp_path) -> None:
    """No rows was matplotlib's "number sections must be larger than 0." (the legend's columns) and a
    figure of nothing; a run of one step (one evaluation, one loss) is drawn."""
    with pytest.raises(ValueError, match=r"^rows: expected the rows of at least one run, got none$"):
        ablation_report.plot([], tmp_path / "ablation.png")
    assert not (tmp_path / "ablation.png").exists()
    rows = [_curve_row(v, 0, [0.3], [1.0]) for v in ("transparent", "xavier")]
    assert ablation_report.plot(rows, tmp_path / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_tells_the_inits_apart_without_colour_and_in_readable_type(tmp_path, monkeypatch) -> None:
    """Every line of ablation.png differs from the others of its panel by marker or line style, not only by
    colour (red-green colour blindness, grayscale print), and keeps its colour, marker and style in all three
    panels and the legend; no text is under 8 pixels when the figure is scaled to the docs' column of about
    800 pixels (as tests/test_doc_figures.py asks of the docs' own figures; 8 pt came out 6); the font
    setting does not leak into later figures."""
    import matplotlib.pyplot as plt

    figures = _drawn_figures(monkeypatch)
    font_size = plt.rcParams["font.size"]
    rows = [
        _curve_row(v, s, [0.1 * k, 0.2, 0.3 + 0.01 * s], [2.0, 1.5, 1.2, 1.0])
        for k, v in enumerate(ablation_report.VARIANTS)
        for s in (0, 1)
    ]
    ablation_report.plot(rows, tmp_path / "ablation.png", title="t")
    (fig,) = figures
    assert plt.rcParams["font.size"] == font_size

    def look(artist) -> tuple:
        return artist.get_marker(), artist.get_linestyle(), artist.get_color()

    handles = fig.legends[0].legend_handles
    assert len({look(h)[:2] for h in handles}) == len(handles) == len(ablation_report.VARIANTS)
    for ax in fig.axes[:3]:
        lines = [line for line in ax.get_lines() if len(line.get_xdata()) > 2]  # not the zero line
        assert len({look(line)[:2] for line in lines}) == len(lines) >= len(ablation_report.VARIANTS) - 1
        assert {look(line) for line in lines} <= {look(h) for h in handles}  # the legend's styles
    fig.canvas.draw()
    sizes = {
        t.get_text(): t.get_fontsize() for t in fig.findobj(plt.Text) if t.get_visible() and t.get_text()
    }
    px_per_pt = 800 / (72 * fig.get_size_inches()[0])  # the figure scaled to the column
    assert min(sizes.values()) * px_per_pt >= 8, sorted(sizes.items(), key=lambda kv: kv[1])[:5]


def test_step0_of_a_random_init_is_scored_per_seed_and_evaluations_leave_the_rng_alone(
    tiny_voc,
    tmp_path,
    one_thread,
    monkeypatch,
    capsys,
) -> None:
    """Only the controls (no random draws) reuse their step-0 score across seeds: a random init's step 0
    differs with the seed. An evaluation draws from the global RNG (its DataLoader's base seed) inside a
    forked RNG, so the training that follows (dropout) does not depend on the evaluation schedule.

    The evaluation is replaced by a fake whose score is a function of the weights (seed-dependent for
    xavier, unlike an untrained model's mIoU, which may tie) and that draws from the global RNG."""
    from examples.voc_joint import engine

    log: list[tuple[str, torch.Tensor]] = []

    def fake_evaluate(model, loader, **kwargs) -> dict:
        log.append(("eval", torch.get_rng_state()))
        torch.rand(8)  # what a DataLoader iterator does
        return _scores(float(sum(p.detach().double().abs().sum() for p in model.parameters())) % 1.0)

    train_one_epoch = engine.train_one_epoch

    def logged_train_one_epoch(*args, **kwargs):
        log.append(("train", torch.get_rng_state()))
        return train_one_epoch(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", logged_train_one_epoch)
    argv = _faked_ablation_argv(tiny_voc, tmp_path, one_thread, monkeypatch, fake_evaluate)
    argv[argv.index("no_fusion")] = "xavier"
    res = ablation.main([*argv, "--seeds", "2", "--steps", "1"])
    step0 = {r["seed"]: r["step0_miou"] for r in res["rows"]}
    assert step0[0] != step0[1]
    for (what, state), (next_what, next_state) in itertools.pairwise(log):
        if what == "eval" and next_what == "train":
            assert torch.equal(state, next_state), "an evaluation changed the RNG that training draws from"
    assert [w for w, _ in log] == ["eval", "train", "eval"] * 2  # 2 seeds: step 0, 1 step, step 1
    capsys.readouterr()


def test_step0_and_final_scores_land_in_their_own_fields(
    tiny_voc,
    tmp_path,
    one_thread,
    monkeypatch,
    capsys,
) -> None:
    """A row's step-0 fields (``step0_miou``, ``step0_boundary_miou``, the curve's step-0 point) hold the
    evaluation before training, its final fields (``miou``, ``boundary_miou``, ``consistency``, the curve's
    last point) the one after it, and the summary and ablation.md report them so. The evaluation is a fake
    that returns other scores at each call."""
    scores = iter([0.25, 0.75])

    def fake_evaluate(model, loader, **kwargs) -> dict:
        m = next(scores)
        return {"miou": m, "boundary_miou": {"1": m / 2, "3": m / 4, "5": m / 8}, "consistency": 1 - m}

    argv = _faked_ablation_argv(tiny_voc, tmp_path, one_thread, monkeypatch, fake_evaluate)
    argv[argv.index("no_fusion")] = "transparent"
    res = ablation.main([*argv, "--steps", "2"])  # evaluated at step 0 and at the end (--eval-every 10)
    (row,) = res["rows"]
    assert row["step0_miou"] == 0.25 and row["step0_boundary_miou"] == {"1": 0.125, "3": 0.0625, "5": 0.03125}
    assert row["miou"] == 0.75 and row["boundary_miou"] == {"1": 0.375, "3": 0.1875, "5": 0.09375}
    assert row["consistency"] == 0.25 and row["steps"] == 2
    assert [(p["step"], p.get("miou")) for p in row["curve"]] == [(0, 0.25), (1, None), (2, 0.75)]
    (summary,) = res["summary"]
    assert summary["step0_miou"] == (0.25, None) and summary["miou"] == (0.75, None)
    assert summary["boundary_miou"] == (0.1875, None)
    assert "| transparent | 1 | 25.0 | 75.0 | 18.8 |" in (tmp_path / "abl" / "ablation.md").read_text()
    capsys.readouterr()


@pytest.mark.parametrize("which", ["--seg-checkpoint", "--spixel-checkpoint"])
def test_bad_checkpoint_refused_before_anything_runs(tiny_voc, tmp_path, one_thread, capsys, which) -> None:
    """A file that is not a checkpoint: train.py's one-line error and status 2, before the run plan, the
    progress bar or the output folder (it used to die at the first run with torch's traceback, status 1)."""
    from examples.voc_joint import train

    seg, spx = untrained_checkpoints(tmp_path / "ck")
    fake = tmp_path / "fake.pt"
    fake.write_text("not a checkpoint\n")
    paths = {"--seg-checkpoint": seg, "--spixel-checkpoint": spx, which: fake}
    out = tmp_path / "abl"
    argv = [*_small_argv(tiny_voc, out, paths["--seg-checkpoint"], paths["--spixel-checkpoint"], one_thread)]
    with pytest.raises(SystemExit) as info:
        ablation.main([*argv, "--max-steps", "1"])
    captured = capsys.readouterr()
    assert info.value.code == 2 and captured.out == ""
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "weights_only=False" not in err
    prefix = "python examples/voc_joint/ablation.py: error: "
    assert err.startswith(f"{prefix}{which}: refusing checkpoint {fake}: the file is damaged"), err
    assert not out.exists()  # no folder, no lock file
    # the same message as the training CLI's for the same file
    train_argv = ["--data-root", str(tiny_voc), "--output-dir", str(tmp_path / "tr"), "--stage", "joint"]
    train_argv += ["--seg-checkpoint", str(paths["--seg-checkpoint"])]
    train_argv += ["--spixel-checkpoint", str(paths["--spixel-checkpoint"]), "--batch-size", "2"]
    train_argv += ["--crop-size", "32", "--workers", "0", "--device", "cpu", "--no-progress"]
    with pytest.raises(SystemExit) as info:
        train.main(train_argv)
    train_err = capsys.readouterr().err.strip()
    assert info.value.code == 2
    assert err.removeprefix(prefix) == train_err.removeprefix("python examples/voc_joint/train.py: error: ")


def test_the_cell_size_is_the_checkpoints_and_a_contradicting_one_is_refused(
    tiny_voc, tmp_path, one_thread, capsys
) -> None:
    """With pretrained checkpoints the runs fine-tune their SpixelFCN: ``--cell-size`` left out is its cell
    size, recorded as such in the settings (it recorded the default 8); a contradicting one is refused before
    anything runs (it was ignored)."""
    seg, spx = untrained_checkpoints(tmp_path / "ck", cell_size=4)
    out = tmp_path / "abl"
    argv = [*_small_argv(tiny_voc, out, seg, spx, one_thread), "--max-steps", "1"]
    with pytest.raises(SystemExit) as info:
        ablation.main([*argv, "--cell-size", "8"])
    captured = capsys.readouterr()
    assert info.value.code == 2 and captured.out == "" and not out.exists()
    assert f"error: --cell-size 8 contradicts --spixel-checkpoint {spx} (cell size 4): " in captured.err
    assert ablation.main(argv)["settings"]["cell_size"] == 4
    assert ablation.main([*argv, "--overwrite", "--cell-size", "4"])["settings"]["cell_size"] == 4
    capsys.readouterr()


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (
            ["--fusion-hidden", "40", "64"],
            "error: --fusion-hidden 40 64: every hidden width of a transparent stack must be at least its "
            "input width, the 42 channels of [S, U(S)] (2 x 21 classes), got 40\n",
        ),
        (["--fusion-hidden", *["64"] * 17], "error: --fusion-hidden must be a list of 1 to 16 ints in "),
        (["--fusion-hidden", "0"], "argument --fusion-hidden: must be an integer in [1, 65536], got 0"),
        (
            ["--fusion-hidden", "64", "--variants", "no_fusion", "no_superpixels"],
            "error: --fusion-hidden 64 with --variants no_fusion no_superpixels: no run has a fusion stack; "
            "drop --fusion-hidden or add a fusion init\n",
        ),
    ],
)
def test_fusion_widths_the_runs_cannot_have_are_refused_before_the_pretraining(given, said, capsys) -> None:
    """Widths below the stack's input (2 x 21 channels: the classes of the pretraining here), too many layers,
    a width of 0, or widths for a plan without a fusion init: exit status 2 before anything runs."""
    parser = ablation.build_parser()
    with pytest.raises(SystemExit) as info:
        ablation.check_args(parser, parser.parse_args(given))
    assert info.value.code == 2
    assert said in capsys.readouterr().err
    ablation.check_args(parser, parser.parse_args(["--fusion-hidden", "42"]))  # 2 x 21: the least width


def test_fusion_widths_with_given_checkpoints_are_checked_without_their_classes(tmp_path, capsys) -> None:
    """With --seg-checkpoint the classes are the checkpoint's (checked when the stack is built), so a width
    below 2 x 21 passes the command-line check, but a stack whose hidden layers alone have too many weights
    is still refused before anything runs."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    parser = ablation.build_parser()
    given = ["--seg-checkpoint", str(seg), "--spixel-checkpoint", str(spx), "--fusion-hidden"]
    ablation.check_args(parser, parser.parse_args([*given, "40"]))
    with pytest.raises(SystemExit) as info:
        ablation.check_args(parser, parser.parse_args([*given, *["8192"] * 16]))
    assert info.value.code == 2
    said = "its hidden layers alone make 1006632960 fusion weights, at most 268435456"
    assert said in capsys.readouterr().err


def test_other_fusion_widths_are_recorded_and_named_in_the_table_and_the_figure() -> None:
    """An ablation of other widths than the paper's says so in ablation.md and in the figure's title; one of
    the default widths, or one recorded before --fusion-hidden existed (no such setting), says nothing."""
    settings = {"steps": 4, "val_images": 2, "joint_lr": 1e-3, "fusion_lr": 1e-4}
    summary = ablation_report.summarize(
        [{"init": "transparent", "seed": 0, "step0_miou": 0.1, "miou": 0.2, "boundary_miou": {"3": 0.1}}]
    )
    for recorded in (settings, {**settings, "fusion_hidden": [64, 64]}):
        assert "Fusion stack" not in ablation_report.format_markdown(summary, recorded)
        assert (
            ablation_report.figure_title(recorded, 3)
            == "joint model, synthetic VOC: 4 fine-tuning steps, 3 seeds, 2 val images"
        )
    other = {**settings, "fusion_hidden": [64]}
    assert "fusion 0.0001. Fusion stack: hidden widths 64 (not the paper's). mIoU in %" in (
        ablation_report.format_markdown(summary, other)
    )
    assert ablation_report.figure_title(other, 3).endswith(", 2 val images, fusion 64")


def test_an_unfinished_ablation_recorded_before_fusion_widths_continues_with_the_default_only(
    tiny_voc, tmp_path, one_thread, capsys
) -> None:
    """An ablation.json written before --fusion-hidden existed records no widths: its runs had the default
    ones, so a continuation with them goes on, and one with other widths is refused, naming both."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    out = tmp_path / "abl"
    argv = [*_small_argv(tiny_voc, out, seg, spx, one_thread), "--max-steps", "1"]
    ablation.main(argv)
    data = json.loads((out / "ablation.json").read_text())
    assert data["settings"]["fusion_hidden"] == [64, 64]
    del data["settings"]["fusion_hidden"]
    data["complete"], data["rows"] = False, []
    (out / "ablation.json").write_text(json.dumps(data))
    stale = (out / "ablation.json").read_text()
    with pytest.raises(SystemExit) as info:
        ablation.main([*argv, "--variants", "transparent", "--fusion-hidden", "48"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "  fusion_hidden: [64, 64] (unfinished ablation) -> [48] (now)" in err
    assert (out / "ablation.json").read_text() == stale
    assert ablation.main(argv)["settings"]["fusion_hidden"] == [64, 64]
    capsys.readouterr()


@pytest.mark.parametrize("option", ["--seg-epochs", "--spixel-epochs"])
def test_pretraining_epochs_with_pretrained_checkpoints_refused(tmp_path, option, capsys) -> None:
    """The epochs set the pretraining, which the checkpoints replace: refused, not ignored."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    parser = ablation.build_parser()
    given = ["--seg-checkpoint", str(seg), "--spixel-checkpoint", str(spx), option, "3"]
    with pytest.raises(SystemExit) as info:
        ablation.check_args(parser, parser.parse_args(given))
    assert info.value.code == 2
    assert f"error: {option} 3 with --seg-checkpoint / --spixel-checkpoint: " in capsys.readouterr().err
    ablation.check_args(parser, parser.parse_args([option, "3"]))  # without checkpoints: the pretraining's
    assert ablation.resolve(parser.parse_args([])).cell_size == ablation.CELL_SIZE


def test_wrong_stage_checkpoint_refused_before_anything_runs(tiny_voc, tmp_path, one_thread, capsys) -> None:
    _, spx = untrained_checkpoints(tmp_path / "ck")
    out = tmp_path / "abl"
    with pytest.raises(SystemExit) as info:
        ablation.main([*_small_argv(tiny_voc, out, spx, spx, one_thread), "--max-steps", "1"])
    captured = capsys.readouterr()
    assert info.value.code == 2 and captured.out == "" and not out.exists()
    assert "--seg-checkpoint: checkpoint" in captured.err
    assert "expected a 'seg' or 'joint' checkpoint" in captured.err


def test_a_failed_ablation_releases_its_folder(tiny_voc, tmp_path, one_thread, monkeypatch, capsys) -> None:
    """The folder lock is released on every failure (its ``.lock`` file stays, by design: an unlocked file
    refuses nothing), so the next ablation into the same folder runs."""
    from examples.voc_joint.locking import FolderLock

    seg, spx = untrained_checkpoints(tmp_path / "ck")
    out = tmp_path / "abl"
    argv = [*_small_argv(tiny_voc, out, seg, spx, one_thread), "--max-steps", "1"]

    def fail(*args, **kwargs):
        raise RuntimeError("run failed")

    monkeypatch.setattr(ablation, "finetune", fail)
    with pytest.raises(RuntimeError, match="run failed"):
        ablation.main(argv)
    assert (out / ".lock").exists()
    with FolderLock(out):  # not held any more
        pass
    monkeypatch.undo()
    torch.set_num_threads(1)
    res = ablation.main(argv)  # not refused
    assert res["complete"] and [r["init"] for r in res["rows"]] == ["no_fusion"]


def test_an_ablation_stopped_while_it_writes_its_report_continues(
    tiny_voc, tmp_path, one_thread, monkeypatch, capsys
) -> None:
    """ablation.json said "complete" before ablation.md and .png were written: an ablation stopped in
    between (Ctrl-C during the plot: 1 of 4 SIGINTs, at 20.8 s of a 24 s tiny --quick run) left a finished
    ablation without its report, which a rerun refused ("holds a finished ablation") and only --overwrite,
    all runs again, cleared. The rerun now continues and writes the report without training."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    out = tmp_path / "abl"
    argv = [*_small_argv(tiny_voc, out, seg, spx, one_thread), "--max-steps", "1"]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ablation, "plot", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ablation.main(argv)
    assert not json.loads((out / "ablation.json").read_text())["complete"]
    monkeypatch.undo()
    trained = []
    monkeypatch.setattr(ablation, "finetune", lambda *args: trained.append(args))
    res = ablation.main(argv)
    assert res["complete"] and trained == [] and [r["init"] for r in res["rows"]] == ["no_fusion"]
    assert "[ablation] 0 fine-tuning runs" in capsys.readouterr().out
    assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "\n| no_fusion | 1 | " in (out / "ablation.md").read_text()  # the runs of the first attempt


def test_load_average_is_none_where_it_cannot_be_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ``os.getloadavg`` raises (the load average is unobtainable) as where it does not exist (Windows,
    ``tests/examples/test_portability.py``), ablation.json records ``null`` and the messages say n/a."""

    def unobtainable() -> tuple[float, float, float]:
        raise OSError("Load average was unobtainable")

    monkeypatch.setattr(ablation.os, "getloadavg", unobtainable)
    assert ablation._load_average() is None and ablation._load_text(None) == "n/a"
    monkeypatch.setattr(ablation.os, "getloadavg", lambda: (0.5, 0.25, 0.125))
    load = ablation._load_average()
    assert load == [0.5, 0.25, 0.125] and ablation._load_text(load) == "0.50"


def test_an_output_folder_that_cannot_be_made_is_one_error_line(tmp_path, one_thread, capsys) -> None:
    """An --output-dir that is a file: one error line (a FileExistsError traceback, then exit status 1), exit
    status 2 with argparse's usage before anything runs, as every script's unusable output folder
    (``test_cli_output_dir.py``)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as info:
        ablation.main(["--output-dir", str(blocker), "--quick", "--no-progress", *one_thread])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and err.count("error:") == 1, err
    last = err.splitlines()[-1]
    assert (
        last.startswith("python examples/voc_joint/ablation.py: error: --output-dir: ")
        and str(blocker) in last
    )


def test_a_signal_during_a_run_is_one_line_with_exit_status_143(tiny_voc, tmp_path) -> None:
    """SIGTERM during a fine-tuning run ended the ablation silently (SIGINT: exit status 130 and no word
    either). It now prints one line naming the signal and what a rerun does, with exit status 143."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    out = tmp_path / "abl"
    argv = [*_small_argv(tiny_voc, out, seg, spx, ["--threads", "1"]), "--max-steps", "1"]
    res = run_example("ablation.py", argv, fault="sigterm@step:1")
    assert res.returncode == 143, res.stderr
    assert "stopped by SIGTERM (exit status 143); ablation.json keeps the finished runs" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    record = json.loads((out / "ablation.json").read_text())  # no run finished; the session is recorded
    assert record["rows"] == [] and not record["complete"] and [s["runs"] for s in record["sessions"]] == [0]


def test_a_stopped_or_diverged_ablation_with_overwrite_says_to_rerun_without_it(
    tiny_voc, tmp_path, one_thread, capsys
) -> None:
    """With --overwrite, the line of a stopped ablation and the error of a diverged run said "the same command
    continues", but the same command deletes ablation.json's finished runs (and the pretraining) and starts
    over; they name the command without --overwrite now. The stop line also says where a stopped pretraining
    keeps its work (there is no ablation.json yet)."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    out = tmp_path / "abl"
    argv = [*_small_argv(tiny_voc, out, seg, spx, ["--threads", "1"]), "--max-steps", "1", "--overwrite"]
    res = run_example("ablation.py", argv, fault="sigterm@step:1")
    assert res.returncode == 143, res.stderr
    assert res.stderr.strip().splitlines() == [
        "python examples/voc_joint/ablation.py: stopped by SIGTERM (exit status 143); ablation.json keeps "
        "the finished runs (a stopped pretraining: its checkpoint in pretrain/); the same command without "
        "--overwrite continues with the others"
    ], res.stderr

    diverging = [*_small_argv(tiny_voc, out, seg, spx, one_thread), "--max-steps", "3", "--fusion-lr", "1e6"]
    diverging[diverging.index("no_fusion") + 1 : diverging.index("no_fusion") + 1] = ["xavier"]
    with pytest.raises(SystemExit) as info:
        ablation.main([*diverging, "--overwrite"])
    err = capsys.readouterr().err
    assert info.value.code == 1 and err.count("\n") == 1, err
    assert (
        f"the runs finished before it are in {out / 'ablation.json'} and the same command without "
        "--overwrite continues from them." in err
    ), err


@pytest.mark.parametrize(("folder", "seeds"), [("ablation", 3), ("ablation_10seeds", 10)])
def test_redraw_figure_draws_the_committed_rows_with_the_runs_title(
    folder: str, seeds: int, tmp_path, monkeypatch
) -> None:
    """``redraw_figure`` draws ``ablation.png`` from a finished ``ablation.json`` (how the committed figures
    are redrawn after a change of ``plot``), with the title the run gives it, and refuses a folder without
    one or with an unfinished one."""
    from pathlib import Path

    from examples.voc_joint.cli import UsageError

    root = Path(__file__).resolve().parents[2]
    text = (root / "benchmarks" / "results" / folder / "ablation.json").read_text()
    (tmp_path / "ablation.json").write_text(text)
    drawn: list[tuple[int, Path, str]] = []
    monkeypatch.setattr(
        ablation_report, "plot", lambda rows, path, title="": drawn.append((len(rows), path, title))
    )
    ablation_report.redraw_figure(tmp_path)
    rows = json.loads(text)["rows"]
    seeds_text = "1 seed" if seeds == 1 else f"{seeds} seeds"
    title = f"joint model, synthetic VOC: 40 fine-tuning steps, {seeds_text}, 16 val images"
    assert drawn == [(len(rows), tmp_path / "ablation.png", title)]

    unfinished = json.loads(text)
    unfinished["complete"] = False
    (tmp_path / "ablation.json").write_text(json.dumps(unfinished))
    with pytest.raises(UsageError, match="unfinished ablation"):
        ablation_report.redraw_figure(tmp_path)
    with pytest.raises(UsageError, match="found none"):
        ablation_report.redraw_figure(tmp_path / "empty")


@pytest.mark.parametrize(
    "damage",
    ["cut", "list", "rows", "row", "curve", "settings"],
)
def test_redraw_figure_refuses_a_damaged_record_naming_it(damage: str, tmp_path, monkeypatch) -> None:
    """``redraw_figure`` (which the development page tells users to run) read ``ablation.json`` unchecked: a
    cut file raised ``JSONDecodeError``, a JSON array ``AttributeError``, damaged rows ``KeyError`` or
    ``TypeError``. Each is a ``UsageError`` naming the file now, and nothing is drawn."""
    from pathlib import Path

    from examples.voc_joint.cli import UsageError

    root = Path(__file__).resolve().parents[2]
    text = (root / "benchmarks" / "results" / "ablation" / "ablation.json").read_text()
    result = json.loads(text)
    if damage == "cut":
        text = text[: len(text) // 2]
    elif damage == "list":
        text = json.dumps([result])
    elif damage == "rows":
        text = json.dumps({**result, "rows": {"a": 1}})
    elif damage == "row":
        text = json.dumps({**result, "rows": [*result["rows"][:2], {"seed": 0}]})
    elif damage == "curve":
        text = json.dumps({**result, "rows": [{**result["rows"][0], "curve": [1, 2]}]})
    else:
        text = json.dumps({k: v for k, v in result.items() if k != "settings"})
    (tmp_path / "ablation.json").write_text(text)
    drawn: list[object] = []
    monkeypatch.setattr(ablation_report, "plot", lambda *args, **kwargs: drawn.append(args))
    with pytest.raises(UsageError, match=r"ablation\.json' is not an ablation's record"):
        ablation_report.redraw_figure(tmp_path)
    assert drawn == []


def test_the_figure_title_names_the_data_as_ablation_md_does(
    tiny_voc, tmp_path, one_thread, monkeypatch, capsys
) -> None:
    """With --data-root the title of ablation.png names that data, as the title of ablation.md does, and so
    does its redraw (it said "synthetic VOC" whatever the data); the committed runs' JSON, which predates the
    record, keeps its title (test above)."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    out = tmp_path / "abl"
    titles: list[str] = []
    for module in (ablation, ablation_report):  # the run's figure, then the redraw's
        monkeypatch.setattr(module, "plot", lambda rows, path, title="": titles.append(title))
    ablation.main([*_small_argv(tiny_voc, out, seg, spx, one_thread), "--max-steps", "1"])
    ablation_report.redraw_figure(out)
    md_title = (out / "ablation.md").read_text().splitlines()[0]
    assert md_title.endswith(f", data: {tiny_voc})")
    assert titles == [f"joint model, data: {tiny_voc}: 1 fine-tuning step, 1 seed, 2 val images"] * 2
    capsys.readouterr()


def test_redraw_figure_reads_a_null_score_back_as_nan(tmp_path) -> None:
    """``ablation.json`` writes a NaN score (no valid pixel in a boundary band) as ``null``: the redraw reads
    the rows back as the run had them (``reloaded_row``), which the figure draws; ``None`` was a TypeError."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    result = json.loads((root / "benchmarks" / "results" / "ablation" / "ablation.json").read_text())
    row = result["rows"][0]
    next(p for p in row["curve"] if p["step"] > 0 and "miou" in p)["miou"] = None
    row["boundary_miou"] = None
    (tmp_path / "ablation.json").write_text(json.dumps(result))
    path = ablation_report.redraw_figure(tmp_path)
    assert path == tmp_path / "ablation.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_run_gets_the_recorded_rates_and_its_seed_and_a_control_is_scored_at_step0_once(
    tiny_voc, tmp_path, one_thread, monkeypatch, capsys
) -> None:
    """Each fine-tuning run trains with the learning rates ablation.json records (SpixelFCN a tenth of
    --joint-lr) and with its own seed; a control (no random draws) is evaluated at step 0 for its first seed
    only, the later seeds reusing that score, while a fusion init is evaluated at step 0 for every seed. The
    training state's builder and the evaluation are wrapped to record what they get."""
    from examples.voc_joint import train

    calls: list[str] = []
    built: list[tuple] = []
    widths: list[list[int] | None] = []

    def fake_evaluate(model, loader, **kwargs) -> dict:
        calls.append("eval")
        return _scores(len(calls) / 100)

    build_train_state = train.build_train_state

    def recorded(stage, args, *rest, **kwargs):
        calls.append("build")
        built.append(
            (args.lr, args.spixel_lr, args.fusion_lr, args.seed, args.fusion_init if args.fusion else None)
        )
        widths.append(args.fusion_hidden if args.fusion else None)
        return build_train_state(stage, args, *rest, **kwargs)

    monkeypatch.setattr(train, "build_train_state", recorded)
    argv = _faked_ablation_argv(tiny_voc, tmp_path, one_thread, monkeypatch, fake_evaluate)
    at = argv.index("no_fusion")
    argv[at : at + 1] = ["xavier", "no_fusion"]
    argv += [
        "--seeds",
        "2",
        "--steps",
        "1",
        "--joint-lr",
        "0.05",
        "--fusion-lr",
        "0.003",
        "--fusion-hidden",
        "48",
    ]
    res = ablation.main(argv)
    rates = (0.05, 0.05 / 10, 0.003)
    assert built == [(*rates, 0, "xavier"), (*rates, 0, None), (*rates, 1, "xavier"), (*rates, 1, None)]
    assert widths == [[48], None, [48], None]  # the fusion init's stack; the control has none
    settings = res["settings"]
    assert (settings["joint_lr"], settings["spixelfcn_lr"], settings["fusion_lr"]) == rates
    assert settings["fusion_hidden"] == [48]
    # seeds 0 and xavier 1: build, step 0, step 1; no_fusion seed 1: build, step 1 only
    assert calls == ["build", "eval", "eval"] * 3 + ["build", "eval"]
    by = {(r["init"], r["seed"]): r for r in res["rows"]}
    assert by["no_fusion", 1]["step0_miou"] == by["no_fusion", 0]["step0_miou"] == 0.05
    assert by["xavier", 1]["step0_miou"] == 0.08 != by["xavier", 0]["step0_miou"]
    capsys.readouterr()


def test_the_pretraining_settings_are_none_with_given_checkpoints(tmp_path) -> None:
    """ablation.json records the pretraining's epochs and step cap (compared before a pretraining is
    reused) only where the ablation pretrains: with given checkpoints they are None, as documented, not the
    unused defaults."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    parse = ablation.build_parser().parse_args
    keys = ("seg_epochs", "spixel_epochs", "pretrain_max_steps")
    given = ablation.resolve(
        parse(["--seg-checkpoint", str(seg), "--spixel-checkpoint", str(spx), "--max-steps", "2"])
    )
    settings = ablation._run_settings(given, tmp_path, 2)
    assert [settings[k] for k in keys] == [None, None, None] and settings["steps"] == 2
    pretrains = ablation.resolve(parse(["--seg-epochs", "3", "--spixel-epochs", "4", "--max-steps", "2"]))
    assert [ablation._run_settings(pretrains, tmp_path, 2)[k] for k in keys] == [3, 4, 2]


def test_a_continued_ablation_records_every_session_and_their_total_time(
    tiny_voc, tmp_path, one_thread, monkeypatch, capsys
) -> None:
    """After a continuation, ``seconds``, the load averages and ``machine`` described the last session only
    (2.2 s recorded for runs of 7.6 s; the commit of the continuation as the one the runs started from). Each
    session is kept under ``sessions``, ``seconds`` is their total, ``machine`` the first session's, and a
    session on another commit is said."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    argv = [*_small_argv(tiny_voc, tmp_path / "abl", seg, spx, one_thread), "--seeds", "3", "--steps", "1"]
    real = ablation.finetune
    _stopped_in_run(monkeypatch, 3)
    monkeypatch.setattr(ablation, "_commit", lambda: "aaaaaaa")
    with pytest.raises(KeyboardInterrupt):
        ablation.main(argv)
    first = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert [s["runs"] for s in first["sessions"]] == [2] and first["seconds"] == first["sessions"][0][
        "seconds"
    ]
    monkeypatch.setattr(ablation, "finetune", real)
    monkeypatch.setattr(ablation, "_commit", lambda: "bbbbbbb")
    capsys.readouterr()
    res = ablation.main(argv)
    out = capsys.readouterr().out
    assert "the runs so far ran on commit aaaaaaa, this session's on bbbbbbb" in out, out
    assert "s over its 2 sessions" in out
    sessions = res["sessions"]
    assert [s["runs"] for s in sessions] == [2, 1] and sessions[0] == first["sessions"][0]
    assert [s["machine"]["commit"] for s in sessions] == ["aaaaaaa", "bbbbbbb"]
    assert res["machine"]["commit"] == "aaaaaaa" and res["complete"]
    assert res["seconds"] == pytest.approx(sessions[0]["seconds"] + sessions[1]["seconds"])
    assert res["seconds"] >= sum(r["seconds"] for r in res["rows"])
    assert res["load_average_start"] == sessions[0]["load_average_start"]


def test_an_unfinished_record_without_sessions_continues_as_one_session(
    tiny_voc, tmp_path, one_thread, capsys
) -> None:
    """An ``ablation.json`` written before the sessions were kept continues: its top-level record is its one
    session."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    argv = [*_small_argv(tiny_voc, tmp_path / "abl", seg, spx, one_thread), "--seeds", "2", "--steps", "1"]
    done = ablation.main(argv)
    path = tmp_path / "abl" / "ablation.json"
    old = {k: v for k, v in json.loads(path.read_text()).items() if k != "sessions"}
    old.update(complete=False, rows=old["rows"][:1], seconds=12.5)
    path.write_text(json.dumps(old))
    res = ablation.main(argv)
    assert [s["runs"] for s in res["sessions"]] == [1, 1] and res["sessions"][0]["seconds"] == 12.5
    assert res["sessions"][0]["machine"] == done["machine"] and res["seconds"] > 12.5
    capsys.readouterr()


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda d: d.update(rows=None), "its 'rows' is no list of runs"),
        (lambda d: d["rows"][0].pop("init"), r"rows\[0\] is no run"),
        (lambda d: d["rows"][0].update(seed="x"), r"rows\[0\] is no run: init 'no_fusion', seed 'x'"),
        (lambda d: d["rows"][0].update(init="uniform"), r"rows\[0\] is no run: init 'uniform', seed 0"),
        (lambda d: d["rows"][0].update(seed=-3), r"rows\[0\] is no run: init 'no_fusion', seed -3"),
        (lambda d: d.update(rows={"a": 1}), "its 'rows' is no list of runs"),
        (lambda d: d["rows"][0].pop("miou"), "its 'rows' cannot be summarized"),
        (lambda d: d.update(left_out=[{"init": "xavier"}]), r"left_out\[0\] is no run"),
        (
            lambda d: d.update(rows=[*d["rows"], d["rows"][0]]),
            r"rows\[1\] repeats the run of rows\[0\]: init 'no_fusion', seed 0",
        ),
        (
            lambda d: d.update(left_out=[d["rows"][0]]),
            r"left_out\[0\] repeats the run of rows\[0\]: init 'no_fusion', seed 0",
        ),
        (lambda d: d.update(sessions=[{"seconds": "1"}]), r"sessions\[0\] is no session: \{'seconds': '1'\}"),
        (lambda d: d.update(sessions=[{}]), r"sessions\[0\] is no session: \{\}"),
        (lambda d: d["sessions"][0].pop("machine"), r"sessions\[0\] is no session"),
        (lambda d: d.update(sessions=3), "its 'sessions' is no list of sessions: 3"),
    ],
)
def test_an_unfinished_record_with_damaged_runs_is_refused_naming_it(
    tiny_voc, tmp_path, one_thread, capsys, damage, expected
) -> None:
    """Damaged runs in an unfinished ``ablation.json`` gave a traceback (``TypeError: Value after * must be an
    iterable``, ``KeyError: 'init'``, ...): they are refused with exit status 2, naming the file and what is
    wrong, and nothing is changed."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    argv = [*_small_argv(tiny_voc, tmp_path / "abl", seg, spx, one_thread), "--steps", "1"]
    ablation.main(argv)
    path = tmp_path / "abl" / "ablation.json"
    record = json.loads(path.read_text())
    record["complete"] = False
    damage(record)
    path.write_text(json.dumps(record))
    before = path.read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        ablation.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"{path} is not an ablation's record (damaged: " in err, err
    assert re.search(expected, err) and "Traceback" not in err, err
    assert path.read_bytes() == before


def test_a_pretrained_checkpoint_replaced_during_the_runs_stops_the_ablation(
    tiny_voc, tmp_path, one_thread, monkeypatch, capsys
) -> None:
    """Each run loads the pretrained files again: one replaced after the first run (a training still writing
    it) gave a "complete" ablation from two pretrained networks, the control's cached step-0 score from the
    old one. The run that would load other weights stops the ablation, naming the file and both hashes; the
    finished runs are kept, and restoring the file continues them."""
    import shutil

    seg, spx = untrained_checkpoints(tmp_path / "ck")
    shutil.copyfile(seg, tmp_path / "seg_backup.pt")
    argv = [*_small_argv(tiny_voc, tmp_path / "abl", seg, spx, one_thread), "--seeds", "2", "--steps", "1"]
    real = ablation.finetune
    _replaced_after_the_first_run(monkeypatch, seg, "seg")
    with pytest.raises(SystemExit) as info:
        ablation.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"--seg-checkpoint {seg} changed during the ablation (sha256 " in err, err
    record = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert not record["complete"] and [r["seed"] for r in record["rows"]] == [0]
    monkeypatch.setattr(ablation, "finetune", real)
    shutil.copyfile(tmp_path / "seg_backup.pt", seg)
    res = ablation.main(argv)
    assert res["complete"] and [r["seed"] for r in res["rows"]] == [0, 1]
    capsys.readouterr()


def _replaced(path, stage: str) -> dict:
    """The checkpoint at ``path`` with other weights (the same config and step)."""
    from examples.voc_joint.checkpoint import load_checkpoint

    ck = load_checkpoint(path, expect_stage=stage)
    ck["model"] = {k: v + 0.05 if v.is_floating_point() else v for k, v in ck["model"].items()}
    return ck


def _replaced_after_the_first_run(monkeypatch, path, stage: str) -> None:
    """``ablation.finetune`` writing other weights (:func:`_replaced`) over the checkpoint at ``path`` before
    every run but the first (a training still writing the file)."""
    from examples.voc_joint.checkpoint import save_checkpoint

    other, real, calls = _replaced(path, stage), ablation.finetune, []

    def replaced(ctx, variant, seed, progress=None):
        if calls:
            save_checkpoint(path, dict(other))
        calls.append(seed)
        return real(ctx, variant, seed, progress)

    monkeypatch.setattr(ablation, "finetune", replaced)


def test_the_record_checks_refuse_each_damaged_field_and_take_an_old_records_sessions(
    tiny_voc, tmp_path, one_thread, capsys
) -> None:
    """``_record_problem`` at its edges: a bool or negative seed, bool seconds, sessions that are no list or
    whose entries are no objects are refused; ``None`` seconds (an old record's) are not. An old record's one
    session counts its left-out runs too."""
    import copy

    seg, spx = untrained_checkpoints(tmp_path / "ck")
    argv = [*_small_argv(tiny_voc, tmp_path / "abl", seg, spx, one_thread), "--steps", "1"]
    record = json.loads(json.dumps(ablation.main(argv)))
    capsys.readouterr()
    assert ablation._record_problem(record) is None
    for damage, refused in (
        (lambda d: d["rows"][0].update(seed=True), True),
        (lambda d: d["rows"][0].update(seed=-1), True),
        (lambda d: d.update(sessions=[{"machine": None, "seconds": True}]), True),
        (lambda d: d.update(sessions={}), True),
        (lambda d: d.update(sessions=[1]), True),
        (lambda d: d.update(sessions=[{"machine": None, "seconds": None}]), False),
    ):
        damaged = copy.deepcopy(record)
        damage(damaged)
        assert (ablation._record_problem(damaged) is not None) == refused, damaged.get("sessions")
    old = {"rows": [{}], "left_out": [{}, {}], "seconds": 3.0, "machine": {"commit": "x"}}
    assert ablation._sessions(old) == [
        {"machine": {"commit": "x"}, "load_average_start": None, "load_average_end": None, "seconds": 3.0,
         "runs": 3}
    ]  # fmt: skip


def _stopped_in_run(monkeypatch, n: int) -> None:
    """``ablation.finetune`` raising KeyboardInterrupt (Ctrl-C) when run ``n`` starts."""
    real, calls = ablation.finetune, []

    def stopped(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ablation, "finetune", stopped)


def test_an_old_record_without_a_machine_continues(tiny_voc, tmp_path, one_thread, capsys) -> None:
    """A record without ``machine`` (nor ``sessions``) continues: the commit note skips its session."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    argv = [*_small_argv(tiny_voc, tmp_path / "abl", seg, spx, one_thread), "--seeds", "2", "--steps", "1"]
    ablation.main(argv)
    path = tmp_path / "abl" / "ablation.json"
    old = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("sessions", "machine")}
    old.update(complete=False, rows=old["rows"][:1])
    path.write_text(json.dumps(old))
    res = ablation.main(argv)
    assert res["complete"] and res["sessions"][0]["machine"] is None and res["machine"] is None
    assert "note: the runs so far ran on commit" not in capsys.readouterr().out


def test_a_session_records_its_whole_time_and_its_own_start_load(
    tiny_voc, tmp_path, one_thread, monkeypatch, capsys
) -> None:
    """A session's seconds run from its start (its set-up included, here slowed by 2 s), and the record's
    start load is the first session's; a continuation on the same commit has no note, and an ablation of one
    session no total over its sessions."""
    import time

    monkeypatch.setattr(ablation, "_commit", lambda: "aaaaaaa")
    loads = iter(range(1000))
    monkeypatch.setattr(ablation, "_load_average", lambda: [float(next(loads))] * 3)
    real_settings = ablation._settings

    def slow_settings(*args, **kwargs):  # (the set-up before the runs: pretraining, hashing, ...)
        time.sleep(2.0)
        return real_settings(*args, **kwargs)

    monkeypatch.setattr(ablation, "_settings", slow_settings)
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    argv = [*_small_argv(tiny_voc, tmp_path / "abl", seg, spx, one_thread), "--seeds", "2", "--steps", "1"]
    real = ablation.finetune
    _stopped_in_run(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        ablation.main(argv)
    monkeypatch.setattr(ablation, "finetune", real)
    capsys.readouterr()
    res = ablation.main(argv)
    out = capsys.readouterr().out
    first, last = res["sessions"]
    assert first["load_average_start"] != last["load_average_start"]
    assert res["load_average_start"] == first["load_average_start"]
    assert last["seconds"] >= 2.0 + res["rows"][-1]["seconds"]
    assert "note: the runs so far ran on commit" not in out and "s over its 2 sessions" in out
    ablation.main([*argv, "--overwrite"])  # one session
    assert " sessions (load average" not in capsys.readouterr().out


def test_a_replaced_spixel_checkpoint_stops_the_ablation_too(
    tiny_voc, tmp_path, one_thread, monkeypatch, capsys
) -> None:
    """The SpixelFCN checkpoint is checked as the DeepLabV3+ one."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    argv = [*_small_argv(tiny_voc, tmp_path / "abl", seg, spx, one_thread), "--seeds", "2", "--steps", "1"]
    _replaced_after_the_first_run(monkeypatch, spx, "spixel")
    with pytest.raises(SystemExit) as info:
        ablation.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"--spixel-checkpoint {spx} changed during the ablation" in err, err


@pytest.mark.parametrize("when", ["while it loads", "before the load, restored after it"])
def test_a_checkpoint_replaced_around_a_runs_load_is_refused(
    tiny_voc, tmp_path, one_thread, monkeypatch, capsys, when
) -> None:
    """Each of the two checks around a run's load catches what the other cannot: a file replaced while the
    run loads it (found after the load), and one replaced before the load and put back after it (the run
    loaded other weights; found before the load)."""
    import shutil

    from examples.voc_joint import train as train_module
    from examples.voc_joint.checkpoint import save_checkpoint

    seg, spx = untrained_checkpoints(tmp_path / "ck")
    shutil.copyfile(seg, tmp_path / "seg_backup.pt")
    argv = [*_small_argv(tiny_voc, tmp_path / "abl", seg, spx, one_thread), "--seeds", "2", "--steps", "1"]
    other, build, loads = _replaced(seg, "seg"), train_module.build_train_state, []
    finetune, runs = ablation.finetune, []

    def replaced_before_the_second_run(ctx, variant, seed, progress=None):
        if runs and when != "while it loads":
            save_checkpoint(seg, dict(other))
        runs.append(seed)
        return finetune(ctx, variant, seed, progress)

    def around_the_load(*args, **kwargs):
        loads.append(1)
        if len(loads) == 2 and when == "while it loads":
            save_checkpoint(seg, dict(other))
        state = build(*args, **kwargs)
        if len(loads) == 2 and when != "while it loads":
            shutil.copyfile(tmp_path / "seg_backup.pt", seg)
        return state

    monkeypatch.setattr(ablation, "finetune", replaced_before_the_second_run)
    monkeypatch.setattr(train_module, "build_train_state", around_the_load)
    with pytest.raises(SystemExit) as info:
        ablation.main(argv)
    assert info.value.code == 2 and "changed during the ablation" in capsys.readouterr().err


def test_a_continuation_takes_the_same_checkpoints_under_another_path(
    tiny_voc, tmp_path, one_thread, capsys
) -> None:
    """A checkpoint is its content: an unfinished ablation whose checkpoints moved (its output folder renamed
    with its pretraining) continues when their SHA-256 is unchanged (it was refused naming the paths, and only
    --overwrite, which deletes the finished runs, was offered); the record then names the new paths."""
    import shutil

    seg, spx = untrained_checkpoints(tmp_path / "ck")
    out = tmp_path / "abl"
    argv = [*_small_argv(tiny_voc, out, seg, spx, one_thread), "--max-steps", "1"]
    at = argv.index("no_fusion")
    argv[at : at + 1] = ["no_fusion", "xavier"]
    _stopped_in_run_after(argv, 2)
    shutil.move(tmp_path / "ck", tmp_path / "moved")
    moved = [tmp_path / "moved" / "seg" / "checkpoint.pt", tmp_path / "moved" / "spixel" / "checkpoint.pt"]
    argv[argv.index(str(seg))], argv[argv.index(str(spx))] = map(str, moved)
    capsys.readouterr()
    res = ablation.main(argv)
    assert res["complete"] and sorted(r["init"] for r in res["rows"]) == ["no_fusion", "xavier"]
    assert "continuing: 1 of 2 runs already done" in capsys.readouterr().out
    assert res["settings"]["seg_checkpoint"] == str(moved[0].resolve())
    assert res["settings"]["spixel_checkpoint"] == str(moved[1].resolve())


def _stopped_in_run_after(argv: list[str], n: int) -> None:
    """``ablation.main(argv)`` stopped (Ctrl-C) when its run ``n`` starts (:func:`_stopped_in_run`); the real
    ``ablation.finetune`` is back afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        _stopped_in_run(patch, n)
        with pytest.raises(KeyboardInterrupt):
            ablation.main(argv)


def _old_pretraining(out) -> None:
    """A pretraining of an earlier ablation in ``out/pretrain``: both stages' checkpoints."""
    for stage in ("seg", "spixel"):
        (out / "pretrain" / stage).mkdir(parents=True)
        (out / "pretrain" / stage / "checkpoint.pt").write_bytes(b"the old pretraining")


def _overwrite_argv(root, out, threads) -> list[str]:
    """A tiny ``--quick --overwrite`` ablation that pretrains (no checkpoints given)."""
    return [
        "--data-root", str(root), "--output-dir", str(out), "--quick", "--max-steps", "1", "--overwrite",
        "--crop-size", "32", "--batch-size", "2", "--no-progress", *threads,
    ]  # fmt: skip


def test_overwrite_clears_the_whole_pretraining_before_it_starts(
    tiny_voc, tmp_path, one_thread, monkeypatch
) -> None:
    """``--overwrite`` deletes both pretraining stages' old runs before the first one starts: stopped in the
    DeepLabV3+ pretraining, the continuation (the same command without --overwrite) reused the old SpixelFCN,
    which that stage's own --overwrite had not reached yet."""
    from examples.voc_joint import demo

    out = tmp_path / "abl"
    _old_pretraining(out)
    for stage in ("seg", "spixel"):
        (out / "pretrain" / stage / "log.csv").write_text("stage,epoch,step\n")
    (out / "pretrain" / "spixel" / "notes.txt").write_text("a user's file")

    def stopped(*args, **kwargs):  # stopped in the seg stage, before either stage wrote anything
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "pretrain", stopped)
    with pytest.raises(KeyboardInterrupt):
        ablation.main(_overwrite_argv(tiny_voc, out, one_thread))
    for stage in ("seg", "spixel"):
        assert not (out / "pretrain" / stage / "checkpoint.pt").exists(), stage
        assert not (out / "pretrain" / stage / "log.csv").exists(), stage
    assert (out / "pretrain" / "spixel" / "notes.txt").read_text() == "a user's file"  # run files only


def test_a_session_stopped_in_its_first_run_is_recorded(tiny_voc, tmp_path, one_thread, capsys) -> None:
    """A session that finished no run (stopped in its first) was not recorded: missing from ``sessions``, its
    time from ``seconds``. It is now, with no run; the continuation records its own."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    argv = [*_small_argv(tiny_voc, tmp_path / "abl", seg, spx, one_thread), "--steps", "1"]
    _stopped_in_run_after(argv, 1)
    first = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert not first["complete"] and first["rows"] == []
    assert [s["runs"] for s in first["sessions"]] == [0] and first["seconds"] > 0
    res = ablation.main(argv)
    assert res["complete"] and [s["runs"] for s in res["sessions"]] == [0, 1]
    assert res["sessions"][0] == first["sessions"][0]
    assert res["seconds"] == pytest.approx(sum(s["seconds"] for s in res["sessions"]))


def test_a_stop_after_the_record_is_complete_says_the_ablation_had_finished(
    tiny_voc, tmp_path, one_thread, monkeypatch, capsys
) -> None:
    """A signal while the finished ablation printed its table said "the same command continues with the
    others", which is refused ("holds a finished ablation"): the line says where the finished ablation is."""
    from examples.voc_joint.signals import run_stoppable

    seg, spx = untrained_checkpoints(tmp_path / "ck")
    argv = [*_small_argv(tiny_voc, tmp_path / "abl", seg, spx, one_thread), "--steps", "1"]
    monkeypatch.setattr(ablation, "_COMPLETED", [])
    assert ablation._stop_note_now(argv) == ablation._stop_note(argv)
    real_print = print

    def stopped_printing(*args, **kwargs):  # the stop comes while the table is printed
        if args and "Fusion-initialization ablation" in str(args[0]):
            raise KeyboardInterrupt
        real_print(*args, **kwargs)

    monkeypatch.setattr("builtins.print", stopped_printing)

    def run() -> int:
        ablation.main(argv)
        return 0

    status = run_stoppable(run, "ablation.py", lambda: ablation._stop_note_now(argv))
    monkeypatch.setattr("builtins.print", real_print)
    err = capsys.readouterr().err
    path = tmp_path / "abl" / "ablation.json"
    assert status == 130 and json.loads(path.read_text())["complete"]
    assert f"ablation.py: stopped by SIGINT (exit status 130); the ablation had finished: {path}" in err, err
    assert "continues" not in err


def test_a_stop_whose_record_cannot_be_written_stays_a_stop(
    tiny_voc, tmp_path, one_thread, monkeypatch, capsys
) -> None:
    """The record written at a stop failing (a full disk) turned the stop into an error (exit status 1, no
    stop line): the stop goes on, with a line naming the file."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    argv = [*_small_argv(tiny_voc, tmp_path / "abl", seg, spx, one_thread), "--steps", "1"]

    def full(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ablation, "write_text_atomic", full)
    _stopped_in_run_after(argv, 1)
    err = capsys.readouterr().err
    assert f"this session could not be recorded in {tmp_path / 'abl' / 'ablation.json'}" in err, err
    assert "No space left on device" in err


def test_overwrite_deletes_nothing_while_a_run_holds_a_pretraining_folder(
    tiny_voc, tmp_path, one_thread
) -> None:
    """``--overwrite`` takes both pretraining stages' locks before it deletes anything: with the SpixelFCN
    folder in use it deleted the DeepLabV3+ pretraining (and the results) and then was refused."""
    from examples.voc_joint.locking import FolderLock

    out = tmp_path / "abl"
    _old_pretraining(out)
    (out / "ablation.json").write_text("{}")
    with FolderLock(out / "pretrain" / "spixel"), pytest.raises(SystemExit) as info:
        ablation.main(_overwrite_argv(tiny_voc, out, one_thread))
    assert info.value.code == 2
    for stage in ("seg", "spixel"):
        assert (out / "pretrain" / stage / "checkpoint.pt").read_bytes() == b"the old pretraining", stage
    assert (out / "ablation.json").read_text() == "{}"


def test_an_infinite_score_gives_a_nan_spread_not_an_error() -> None:
    """The sample std of a column holding an infinite value is NaN (``statistics.stdev`` raises
    AttributeError on it), as for a NaN: the summary and its table are still made."""
    rows = [_row("transparent", 0, 0.3, 0.5), _row("transparent", 1, 0.3, math.inf)]
    (t,) = ablation_report.summarize(rows)
    mean, std = t["miou"]
    assert mean == math.inf and math.isnan(std)
    md = ablation_report.format_markdown(
        [t], {"steps": 1, "val_images": 2, "joint_lr": 1e-3, "fusion_lr": 1e-4}
    )
    assert "| transparent | 2 | 30.0 ± 0.0 | inf ± nan |" in md


def test_variants_of_no_known_name_come_last_in_sorted_order() -> None:
    """Rows of variants ``VARIANTS`` does not name follow the known ones sorted by name, whatever the order of
    the rows (a continued ablation appends its runs in another order)."""
    rows = [_row("zeta", 0, 0.1, 0.2), _row("transparent", 0, 0.3, 0.5), _row("alpha", 0, 0.1, 0.2)]
    assert [s["init"] for s in ablation_report.summarize(rows)] == ["transparent", "alpha", "zeta"]


def test_each_control_is_scored_at_step0_on_its_own(
    tiny_voc, tmp_path, one_thread, monkeypatch, capsys
) -> None:
    """The step-0 score that the seeds of a control share is that control's own: ``no_superpixels`` (mode
    ``none``) and ``no_fusion`` (hard uniformization) are different networks at step 0, so each is evaluated
    before it trains, not given the other's score. The evaluation is a fake that returns another score at
    each call."""
    calls: list[int] = []

    def fake_evaluate(model, loader, **kwargs) -> dict:
        calls.append(1)
        return _scores(len(calls) / 100)

    argv = _faked_ablation_argv(tiny_voc, tmp_path, one_thread, monkeypatch, fake_evaluate)
    at = argv.index("no_fusion")
    argv[at : at + 1] = ["no_superpixels", "no_fusion"]
    res = ablation.main([*argv, "--steps", "1"])
    by = {r["init"]: r for r in res["rows"]}
    assert len(calls) == 4  # each control: step 0 and step 1
    assert by["no_superpixels"]["step0_miou"] == 0.01 and by["no_fusion"]["step0_miou"] == 0.03
    capsys.readouterr()


def test_seeds_default_to_three_as_documented() -> None:
    """``--seeds`` left out runs the documented 3 seeds per variant (0, 1, 2), and every variant by
    default."""
    opts = ablation.resolve(ablation.build_parser().parse_args([]))
    assert opts.seeds == 3 and list(opts.variants) == list(ablation_report.VARIANTS)
    assert [s for v, s in ablation._plan(opts) if v == "transparent"] == [0, 1, 2]


def test_the_default_output_folder_of_quick_is_its_own() -> None:
    """Without ``--output-dir`` a full run writes into ``<cache>/ablation`` and a ``--quick`` one into
    ``<cache>/ablation_quick`` (as ``--help`` says): a quick run never continues or refuses a full one."""
    from examples.voc_joint import data

    parse = ablation.build_parser().parse_args
    assert ablation._output_dir(parse([])) == data.DEFAULT_CACHE / "ablation"
    assert ablation._output_dir(parse(["--quick"])) == data.DEFAULT_CACHE / "ablation_quick"
    assert ablation._output_dir(parse(["--quick", "--output-dir", "x"])) == ablation.Path("x")


def test_a_runs_progress_line_gives_its_scores_in_percent() -> None:
    """The line printed after each run gives the step-0 and final mIoU in percent (as ablation.md does), the
    steps and the first and last loss."""
    row = _row("xavier", 2, 0.123, 0.456)
    line = ablation._run_line(row)
    assert line.startswith(
        "xavier         seed 2: mIoU  12.3 % ->  45.6 % (step 0 -> 1), loss 1.500 -> 1.500"
    )


def test_a_capped_run_records_the_steps_it_trained(
    tiny_voc, tmp_path, one_thread, monkeypatch, capsys
) -> None:
    """With ``--max-steps`` below ``--steps`` a row's ``steps`` (and its progress line) are the steps the run
    trained, the cap, not the ``--steps`` asked for; its curve ends there too."""
    argv = _faked_ablation_argv(tiny_voc, tmp_path, one_thread, monkeypatch, lambda *a, **k: _scores(0.5))
    res = ablation.main([*argv, "--steps", "3", "--max-steps", "1"])
    (row,) = res["rows"]
    assert row["steps"] == 1 and row["curve"][-1]["step"] == 1 and res["settings"]["steps"] == 1
    assert "(step 0 -> 1)" in capsys.readouterr().out


def test_a_setting_recorded_but_gone_now_is_named_as_a_difference() -> None:
    """A setting the record holds that the current settings lack (a record of another version) is a
    difference too, named with '(no such setting)', not dropped."""
    lines = ablation.settings_differences({"steps": 40, "gone": 1}, {"steps": 40})
    assert lines == ["  gone: 1 (unfinished ablation) -> (no such setting) (now)"], lines


def test_a_checkpoint_moved_and_changed_is_refused_naming_its_path_and_its_hash(tmp_path) -> None:
    """Only a checkpoint with the same SHA-256 under another path counts as the same one (the record then
    takes the new path); one moved *and* changed is refused naming both the path and the hash."""
    from examples.voc_joint.cli import UsageError

    old, new, spx = (str((tmp_path / name).resolve()) for name in ("a/seg.pt", "b/seg.pt", "spx.pt"))
    same = {"spixel_checkpoint": spx, "spixel_checkpoint_sha256": "cc", "steps": 1, "fusion_hidden": [8]}
    previous = {"settings": {"seg_checkpoint": old, "seg_checkpoint_sha256": "aa", **same}}
    current = {"seg_checkpoint": new, "seg_checkpoint_sha256": "bb", **same}
    with pytest.raises(UsageError) as info:
        ablation._check_continuation(previous, current, tmp_path / "ablation.json")
    text = str(info.value)
    assert f"seg_checkpoint: '{old}' (unfinished ablation) -> '{new}' (now)" in text, text
    assert "seg_checkpoint_sha256: 'aa' (unfinished ablation) -> 'bb' (now)" in text, text
    # the same content under the new path: continued
    current["seg_checkpoint_sha256"] = "aa"
    ablation._check_continuation(previous, current, tmp_path / "ablation.json")


def test_an_epoch_ending_between_two_evaluations_adds_no_evaluation(
    tiny_voc, tmp_path, one_thread, monkeypatch, capsys
) -> None:
    """The runs are scored at step 0, every --eval-every steps and at the end only: an epoch of the tiny set
    (4 images, batch 2: 2 steps) that ends between two evaluations is not scored too."""
    calls: list[int] = []

    def fake_evaluate(model, loader, **kwargs) -> dict:
        calls.append(1)
        return _scores(0.5)

    argv = _faked_ablation_argv(tiny_voc, tmp_path, one_thread, monkeypatch, fake_evaluate)
    res = ablation.main([*argv, "--steps", "4", "--eval-every", "3"])
    (row,) = res["rows"]
    assert [p["step"] for p in row["curve"]] == [0, 1, 2, 3, 4], row["curve"]
    scored = [p["step"] for p in row["curve"] if "miou" in p]
    assert scored == [0, 3, 4] and len(calls) == 3, (scored, len(calls))
    capsys.readouterr()
