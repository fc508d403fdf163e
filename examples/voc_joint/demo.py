"""The README's main command: the whole joint pipeline on a generated synthetic VOC set, on a laptop CPU.

``python examples/voc_joint/demo.py`` (no arguments needed; ``--help`` lists the few knobs):

1. generates the synthetic VOC-format set into the cache (``$TRANSINIT_CACHE``, default
   ``~/.cache/transinit``);
2. pretrains DeepLabV3+ (ResNet-18, untrained backbone, low resolution) and SpixelFCN briefly;
3. joins them and prints the step-0 transparency check (joint output vs uniformized DeepLabV3+ output);
4. fine-tunes four variants with the same steps and learning rates: DeepLabV3+ without superpixels (the
   control: mode ``none``, no fusion), superpixel uniformization alone, with the transparent fusion stack,
   and with the same stack Xavier-initialized (what one would pick instead: its step 0 shows the damage);
5. evaluates everything on the validation split and prints a table in the format of the paper's Table 4
   (baseline / + superpixel / + superpixel + transparent init / + Xavier init: mIoU, boundary mIoU,
   consistency), says that it rests on one seed (``ablation.py`` gives mean +- std over seeds), and where
   the panels and logs are.

A second run into the same output folder is refused (one line, exit status 2, nothing touched): pass
``--overwrite`` to replace the earlier run (its results, panels and checkpoints are deleted before anything is
trained) or another ``--output-dir``.

The numbers are whatever this short CPU run produces: tiny networks trained for about a minute on synthetic
data are far from the paper's setting, and the table says so. The paper's fine-tuning learning rates (1e-6 /
1e-7) move nothing in a few dozen steps, so the demo fine-tunes with larger ones (printed); the training CLI's
defaults stay the paper's.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

if __package__ in (None, ""):  # run as a file: put the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from examples.voc_joint.atomic import write_text_atomic
from examples.voc_joint.cli import (
    DATA_ROOT_HELP,
    FACTOR_MAX,
    SIDE_MAX,
    THREADS_MAX,
    DefaultsHelpFormatter,
    UsageError,
    check_one_process,
    check_output_dir,
    existing_dir,
    float_range,
    int_range,
    output_path,
    run_command,
)

__all__ = [
    "DEMO_OUTPUTS",
    "PANEL_TITLES",
    "TABLE4_METRICS",
    "build_parser",
    "check_args",
    "join_pretrained",
    "main",
    "run_demo",
    "same_size_batches",
    "table_footer",
    "transparency_check",
    "write_panels",
    "write_results",
]

POS = int_range(1)
#: What a demo run writes into its output folder, results first (``--overwrite`` deletes these in this order,
#: the folders whole, with any file put into them; other files at the top level of the output folder stay).
DEMO_OUTPUTS = (
    "results.json",
    "table.txt",
    "panels",
    "pretrain",
    "baseline_finetuned",
    "superpixel",
    "superpixel_ti",
    "superpixel_xavier",
)


def build_parser() -> argparse.ArgumentParser:
    """The demo's command line (``python examples/voc_joint/demo.py --help``)."""
    p = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python examples/voc_joint/demo.py",
        description="Synthetic-data demo of the joint DeepLabV3+ + SpixelFCN pipeline (CPU, a few minutes).",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "--output-dir",
        type=output_path,
        default=None,
        help="where checkpoints, logs, panels and results go (default: <cache>/demo)",
    )
    p.add_argument(
        "--data-root",
        type=existing_dir,
        default=None,
        help=DATA_ROOT_HELP,
    )
    p.add_argument("--seg-epochs", type=POS, default=36, help="DeepLabV3+ pretraining epochs")
    p.add_argument("--spixel-epochs", type=POS, default=16, help="SpixelFCN pretraining epochs")
    p.add_argument("--joint-epochs", type=POS, default=5, help="fine-tuning epochs of each joint variant")
    p.add_argument(
        "--max-steps", type=POS, default=None, help="cap every stage at this many steps (smoke runs)"
    )
    p.add_argument("--crop-size", type=int_range(1, SIDE_MAX), default=64, help="training crop")
    p.add_argument("--batch-size", type=int_range(2), default=8, help="training batch (>= 2: BatchNorm)")
    p.add_argument("--cell-size", type=int_range(1, 1024), default=8, help="superpixel cell size")
    p.add_argument(
        "--joint-lr",
        type=float_range(0.0, FACTOR_MAX),
        default=2e-3,
        help="fine-tuning lr of DeepLabV3+; SpixelFCN gets a tenth (the paper's 1e-6 moves nothing in a "
        "short demo)",
    )
    p.add_argument(
        "--fusion-lr",
        type=float_range(0.0, FACTOR_MAX),
        default=2e-4,
        help="fine-tuning lr of the transparent layers",
    )
    p.add_argument(
        "--max-val-images",
        type=POS,
        default=None,
        help="evaluate on the first N validation images (default: all)",
    )
    p.add_argument("--threads", type=int_range(1, THREADS_MAX), default=2, help="torch CPU threads")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier demo run in --output-dir (deleted first)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def common_args(opts: argparse.Namespace, root: Path, *, model: bool = True) -> list[str]:
    """Training-CLI options shared by every stage of the demo (and of the ablation): the small CPU models
    (not with ``model=False``: a joint stage takes them from its checkpoints), the data and the run
    settings."""
    models = ["--backbone", "resnet18", "--aspp-channels", "64", "--cell-size", str(opts.cell_size)]
    models += ["--spixel-width", "8", "--spixel-centre-bias", "1.5"]
    argv = [
        "--data-root",
        str(root),
        *(models if model else []),
        "--crop-size",
        str(opts.crop_size),
        "--scale-min",
        "0.75",
        "--scale-max",
        "1.25",
        "--batch-size",
        str(opts.batch_size),
        "--workers",
        "0",
        "--device",
        "cpu",
        "--log-every",
        "5",
        "--seed",
        "0",
    ]
    if opts.no_progress:
        argv.append("--no-progress")
    if opts.max_steps is not None:
        argv += ["--max-steps", str(opts.max_steps)]
    return argv


def pretrain(
    opts: argparse.Namespace,
    common: list[str],
    folder: Path,
    info: Any,
    *,
    steps: tuple[str, str] = ("1/2", "2/2"),
    tag: str = "demo",
) -> tuple[Path, Path]:
    """Pretrain DeepLabV3+ (``opts.seg_epochs``) and SpixelFCN (``opts.spixel_epochs``) into ``folder``
    with the demo's recipe; returns the two checkpoints."""
    print(f"\n[{tag}] {steps[0]} pretraining DeepLabV3+ (ResNet-18, untrained backbone) ...", flush=True)
    seg_argv = ["--output-dir", str(folder), "--epochs", str(opts.seg_epochs), "--seg-lr", "0.02"]
    seg = _run_stage("seg", [*common, *seg_argv, "--head-lr-mult", "5"], info)
    print(f"\n[{tag}] {steps[1]} pretraining SpixelFCN ...", flush=True)
    spx_argv = ["--output-dir", str(folder), "--epochs", str(opts.spixel_epochs)]
    spx_argv += ["--spixel-pretrain-lr", "2e-3", "--weight-decay", "0"]
    spx = _run_stage("spixel", [*common, *spx_argv], info)
    return seg, spx


def val_loader(root: Path, max_images: int | None = None) -> torch.utils.data.DataLoader[Any]:
    """The validation split at full size (batch 1), or its first ``max_images`` images."""
    from examples.voc_joint import data

    full = data.build_dataset(root, "val", crop_size=None, train=False)
    count = len(full) if max_images is None else min(max_images, len(full))
    val = torch.utils.data.Subset(full, range(count))
    # its own generator: iterating the loader does not draw from the global RNG (training draws stay put)
    gen = torch.Generator().manual_seed(0)
    return torch.utils.data.DataLoader(val, batch_size=1, shuffle=False, num_workers=0, generator=gen)


def _train_args(extra: list[str]) -> argparse.Namespace:
    from examples.voc_joint.train_options import build_parser

    return build_parser().parse_args(extra)


def _run_stage(stage: str, argv: list[str], info: Any) -> Path:
    """One stage of the training CLI with the options ``argv``; a stop is said by the demo's own line (it
    has no ``--resume``), not by the stage's."""
    from examples.voc_joint.train import run_stage

    return run_stage(stage, _train_args(argv), info, own_command=False)


def join_pretrained(
    seg_ckpt: Path,
    spixel_ckpt: Path,
    *,
    fusion: bool,
    seed: int = 0,
    mode: str = "hard",
    fusion_init: str = "transparent",
) -> torch.nn.Module:
    """A ``JointModel`` (eval mode) made of the two pretrained networks, exactly as the joint stage starts.

    Built by the training CLI's own model builder (:func:`examples.voc_joint.train.build_stage_model`).
    """
    from examples.voc_joint.train import build_stage_model
    from examples.voc_joint.train_options import resolve_stage_options

    argv = ["--seg-checkpoint", str(seg_ckpt), "--spixel-checkpoint", str(spixel_ckpt), "--mode", mode]
    argv += ["--seed", str(seed), "--fusion" if fusion else "--no-fusion", "--fusion-init", fusion_init]
    args = resolve_stage_options("joint", _train_args(argv))
    return build_stage_model("joint", args).eval()


def same_size_batches(samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Collate ``samples`` into batches of equal-size images: one batch per image size, in order of first
    appearance (full-size VOC images differ in size and cannot be stacked into one batch; samples of one size,
    such as the synthetic set's, make a single batch)."""
    groups: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    for sample in samples:
        groups.setdefault(tuple(sample["seg_input"].shape), []).append(sample)
    return [torch.utils.data.default_collate(group) for group in groups.values()]


@torch.no_grad()
def transparency_check(
    seg_ckpt: Path,
    spixel_ckpt: Path,
    batches: dict[str, Any] | Iterable[dict[str, Any]],
    *,
    seed: int = 0,
) -> dict[str, float]:
    """Join the pretrained networks; compare at step 0 the joint output and the uniformized DeepLabV3+ output.

    Args:
        seg_ckpt (Path): the pretrained DeepLabV3+ checkpoint.
        spixel_ckpt (Path): the pretrained SpixelFCN checkpoint.
        batches (dict | Iterable[dict]): a batch (``seg_input``, ``spixel_input``, ``target``) or several,
            e.g. :func:`same_size_batches` of images of different sizes.
        seed (int): seed of the fusion stack's construction.

    Returns:
        dict: ``max_abs_diff`` (fusion on vs. fusion off, i.e. ``uniformize(S, ids)``) and ``max_abs_logit``
        (both the largest over all batches; NaN when an output holds NaN, which fails the check), and
        ``consistency`` (fraction of all superpixels with a single predicted label,
        :func:`~examples.voc_joint.metrics.superpixel_scores`).
    """
    from examples.voc_joint.metrics import superpixel_scores

    with_ti = join_pretrained(seg_ckpt, spixel_ckpt, fusion=True, seed=seed)
    without = join_pretrained(seg_ckpt, spixel_ckpt, fusion=False, seed=seed)
    max_diff, max_logit, pure, count = 0.0, 0.0, 0.0, 0.0
    for batch in [batches] if isinstance(batches, dict) else batches:
        out = with_ti(batch["seg_input"], batch["spixel_input"])
        ref = without(batch["seg_input"], batch["spixel_input"])
        scores = superpixel_scores(
            out["logits"].argmax(1),
            batch["target"],
            out["superpixels"],
            num_classes=cast(int, with_ti.num_classes),
            region=batch.get("region"),
        )
        max_diff = _largest(max_diff, float((out["logits"] - ref["logits"]).abs().max()))
        max_logit = _largest(max_logit, float(out["seg_logits"].abs().max()))
        pure, count = pure + scores["pure_superpixels"], count + scores["superpixels"]
    return {"max_abs_diff": max_diff, "max_abs_logit": max_logit, "consistency": pure / max(count, 1.0)}


def _largest(a: float, b: float) -> float:
    """``max(a, b)``, NaN when either is NaN: Python's ``max`` keeps its first argument against a NaN, so a
    NaN output read as a difference of 0 (a check that passed)."""
    return float("nan") if math.isnan(a) or math.isnan(b) else max(a, b)


#: Titles of the demo's panel tiles: the table's "baseline" row (the pretrained DeepLabV3+) next to its
#: "+ superpixel + transparent init (fine-tuned)" row, whose superpixels the first tile shows.
PANEL_TITLES = (
    "image + superpixels",
    "ground truth",
    "baseline (pretrained)",
    "joint (transparent init, fine-tuned)",
)


@torch.no_grad()
def write_panels(
    baseline: torch.nn.Module,
    joint: torch.nn.Module,
    loader: Iterable[dict[str, Any]],
    folder: Path,
    *,
    max_panels: int = 4,
) -> list[Path]:
    """PNG panels of the first ``max_panels`` images of ``loader``: image with ``joint``'s superpixels |
    ground truth | ``baseline``'s prediction | ``joint``'s prediction (titles :data:`PANEL_TITLES`). Both
    models obey the model contract and run where the batches are, in their current mode. Returns the paths."""
    from examples.voc_joint.visualize import save_panel

    paths: list[Path] = []
    for batch in loader:
        base = baseline(batch["seg_input"], batch["spixel_input"])["logits"].argmax(1)
        out = joint(batch["seg_input"], batch["spixel_input"])
        pred = out["logits"].argmax(1)
        superpixels = out["superpixels"].reshape(pred.shape)
        for i in range(pred.shape[0]):
            if len(paths) >= max_panels:
                return paths
            path = folder / f"{batch['name'][i]}.png"
            args = (batch["image"][i], batch["target"][i], base[i], pred[i], superpixels[i])
            paths.append(save_panel(path, *args, titles=PANEL_TITLES))
    return paths


#: The columns of the paper's Table 4 (labels of :func:`examples.voc_joint.metrics.format_table`).
TABLE4_METRICS = ("mIoU (%)", "boundary mIoU, 3 px (%)", "consistency, superpixels (%)")


def write_results(out: Path, results: dict[str, Any], table: str) -> None:
    """Write ``results.json`` and ``table.txt`` into ``out``, each whole or not at all
    (:func:`~examples.voc_joint.atomic.write_text_atomic`): a demo stopped while writing them leaves the
    earlier run's file, never a cut one."""
    from examples.voc_joint.metrics import dumps

    write_text_atomic(out / "results.json", dumps(results) + "\n")
    write_text_atomic(out / "table.txt", table + "\n")


def table_footer(num_val: int) -> str:
    """What the demo's table rests on, printed under it (the demo has no seed option: every run uses 0)."""
    return (
        f"One seed (0, fixed) and {num_val} validation images: differences of a few points are within "
        "run-to-run noise.\nMean +- std over seeds of every fusion init and both controls: python "
        "examples/voc_joint/ablation.py; see docs/examples/ablation.rst."
    )


def run_demo(opts: argparse.Namespace) -> dict[str, Any]:
    """Run every step of the demo (see the module docstring); returns the results (also saved as JSON).

    The output folder is locked for the run (:class:`~examples.voc_joint.locking.FolderLock`). With
    ``opts.overwrite`` the outputs of an earlier demo run there (:data:`DEMO_OUTPUTS`) are deleted first.

    Raises:
        UsageError: the folder holds a demo run and ``opts.overwrite`` is not set, or another run holds it.
    """
    from examples.voc_joint.locking import FolderLock
    from examples.voc_joint.resume import clear_run

    t_start = time.perf_counter()
    out = _output_dir(opts)
    _refuse_earlier_run(out, opts.overwrite)  # before the lock: a refusal leaves no trace
    check_user_data(opts)  # as well; and before --overwrite deletes anything
    with FolderLock(out):
        _refuse_earlier_run(out, opts.overwrite)  # a run that ended meanwhile
        clear_run(out, DEMO_OUTPUTS)  # results first: never old results next to new checkpoints
        return _run_demo(opts, out, t_start)


def _output_dir(opts: argparse.Namespace) -> Path:
    """Where the demo writes: ``--output-dir``, or ``demo`` in the cache."""
    from examples.voc_joint import data

    return Path(opts.output_dir) if opts.output_dir is not None else data.DEFAULT_CACHE / "demo"


def check_args(parser: argparse.ArgumentParser, opts: argparse.Namespace) -> None:
    """Checks before anything runs: one process (``cli.check_one_process``), and the output folder can be
    written (``cli.check_output_dir``)."""
    check_one_process(parser, "demo.py")
    check_output_dir(parser, _output_dir(opts), given=opts.output_dir is not None)


def check_user_data(opts: argparse.Namespace) -> None:
    """With ``--data-root`` (a user's data, not the generated set): the training CLI's checks of the training
    and validation splits (:func:`examples.voc_joint.train_data.check_data`), before anything is written.

    Raises:
        FileNotFoundError: listed images or masks that do not exist (all named), a missing list or folder.
        DataError: an empty list, one that is not UTF-8 text or names an image more than once, or an entry
            that leaves the data folders.
        UsageError: the training split holds validation images.
    """
    if opts.data_root is None:
        return
    from examples.voc_joint.distributed import DistInfo
    from examples.voc_joint.train_data import check_data
    from examples.voc_joint.train_options import build_parser, resolve_stage_options

    args = build_parser().parse_args(common_args(opts, Path(opts.data_root), model=False))
    check_data(resolve_stage_options("seg", args), DistInfo(), val=True, own_command=False)


def _refuse_earlier_run(out: Path, overwrite: bool) -> None:
    from examples.voc_joint.resume import run_files

    present = run_files(out, DEMO_OUTPUTS)
    if present and not overwrite:
        names = ", ".join(p.name for p in present)
        raise UsageError(
            f"output folder {out} holds a demo run ({names}); pass --overwrite to replace it, or choose "
            "another --output-dir (nothing was changed)"
        )


def _run_demo(opts: argparse.Namespace, out: Path, t_start: float) -> dict[str, Any]:
    from examples.voc_joint import data
    from examples.voc_joint.checkpoint import load_model_from_checkpoint
    from examples.voc_joint.distributed import DistInfo
    from examples.voc_joint.evaluate import evaluate
    from examples.voc_joint.metrics import format_table

    torch.set_num_threads(opts.threads)
    root = Path(opts.data_root) if opts.data_root is not None else data.ensure_synthetic_voc()
    print(f"[demo] data: {root}\n[demo] outputs: {out}", flush=True)
    common = common_args(opts, root)  # the stage folders are new: nothing for the stages to overwrite
    info = DistInfo(device=torch.device("cpu"))
    seg, spx = pretrain(opts, common, out / "pretrain", info, steps=("1/4", "2/4"))

    loader = val_loader(root, opts.max_val_images)
    val = cast(torch.utils.data.Subset[Any], loader.dataset)
    # the first 4 validation images, batched by size (real VOC images differ in size)
    check = transparency_check(seg, spx, same_size_batches([val[i] for i in range(min(4, len(val)))]))
    print(
        "\n[demo] 3/4 step-0 transparency check (joint model with the transparent fusion stack vs. the "
        "uniformized pretrained DeepLabV3+, float32):"
    )
    # the paper's recovery bar, 1e-4 for inputs in [-10, 10], scaled with the logits' range (float32 rounding
    # grows with it: logits of ~800 after a short pretraining miss by ~1e-4 with a correct stack)
    bar = 1e-4 * max(1.0, check["max_abs_logit"] / 10)
    print(
        f"        max |joint - uniformize(S)| = {check['max_abs_diff']:.2e}  (|S| up to "
        f"{check['max_abs_logit']:.1f}; requirement <= 1e-4 x max(1, |S| / 10) = {bar:.1e}: "
        f"{'PASS' if check['max_abs_diff'] <= bar else 'FAIL'}), consistency "
        f"{100 * check['consistency']:.1f} %",
        flush=True,
    )

    print(
        f"\n[demo] 4/4 fine-tuning, same steps for each: a control without superpixels, then the joint model "
        f"(hard uniformization) without fusion, with the transparent fusion stack and with the same stack "
        f"Xavier-initialized; demo learning rates: DeepLabV3+ {opts.joint_lr:g}, SpixelFCN "
        f"{opts.joint_lr / 10:g}, fusion layers {opts.fusion_lr:g} (the paper and the CLI defaults use "
        "1e-6 / 1e-6 / 1e-7) ...",
        flush=True,
    )
    joint_common = [
        *common,
        "--epochs",
        str(opts.joint_epochs),
        "--seg-checkpoint",
        str(seg),
        "--spixel-checkpoint",
        str(spx),
        "--lr",
        str(opts.joint_lr),
        "--spixel-lr",
        str(opts.joint_lr / 10),
        "--fusion-lr",
        str(opts.fusion_lr),
        "--mode",
        "hard",
    ]
    control = _run_stage(
        "joint",
        [*joint_common, "--mode", "none", "--no-fusion", "--output-dir", str(out / "baseline_finetuned")],
        info,
    )
    sp_only = _run_stage(
        "joint", [*joint_common, "--no-fusion", "--output-dir", str(out / "superpixel")], info
    )
    sp_ti = _run_stage("joint", [*joint_common, "--fusion", "--output-dir", str(out / "superpixel_ti")], info)
    xavier_argv = ["--fusion", "--fusion-init", "xavier", "--output-dir", str(out / "superpixel_xavier")]
    sp_xavier = _run_stage("joint", [*joint_common, *xavier_argv], info)

    print("\n[demo] evaluating on the validation split (full images) ...", flush=True)
    progress = not opts.no_progress

    def score(model: torch.nn.Module, panels: Path | None = None) -> dict[str, Any]:
        return evaluate(model, loader, device="cpu", panels_dir=panels, max_panels=4, progress=progress)

    seg_model, _ = load_model_from_checkpoint(seg, expect_stage="seg")
    res_base = score(seg_model)
    res_step0 = score(join_pretrained(seg, spx, fusion=False))
    m_ctrl, _ = load_model_from_checkpoint(control, expect_stage="joint")
    res_ctrl = score(m_ctrl)
    m_sp, _ = load_model_from_checkpoint(sp_only, expect_stage="joint")
    res_sp = score(m_sp)
    m_ti, _ = load_model_from_checkpoint(sp_ti, expect_stage="joint")
    res_ti = score(m_ti)
    # the Xavier stack exactly as its fine-tuning started (same seed, same draws): the step-0 damage
    res_x0 = score(join_pretrained(seg, spx, fusion=True, fusion_init="xavier"))
    m_x, _ = load_model_from_checkpoint(sp_xavier, expect_stage="joint")
    res_x = score(m_x)
    rows = [
        ("DeepLabV3+ (baseline, pretrained)", {**res_base, "consistency": None}),
        ("DeepLabV3+ fine-tuned alike (no superpixels)", res_ctrl),
        ("+ superpixel, step 0 (= transparent init at step 0)", res_step0),
        ("+ superpixel (fine-tuned)", res_sp),
        ("+ superpixel + transparent init (fine-tuned)", res_ti),
        ("+ superpixel + Xavier init, step 0", res_x0),
        ("+ superpixel + Xavier init (fine-tuned)", res_x),
    ]
    table = format_table(dict(rows), metrics=TABLE4_METRICS, transpose=True)
    panels_dir = out / "panels"
    write_panels(seg_model, m_ti, loader, panels_dir, max_panels=4)
    elapsed = time.perf_counter() - t_start
    print("\n" + "=" * 80)
    synthetic = opts.data_root is None
    split = "synthetic VOC val" if synthetic else f"val split of {root}"
    print(f"Table 4 format ({split}, full images, ResNet-18 DeepLabV3+ trained from scratch on CPU;")
    on = " on synthetic data" if synthetic else ""
    print(f"a run of {elapsed:.0f} s in all{on}: not comparable with the paper's numbers)")
    print(table)
    print(table_footer(len(val)))
    print("=" * 80)
    results = {
        "transparency": check,
        "seeds": 1,
        "table": {
            name: {
                "miou": r["miou"],
                "boundary_miou": r["boundary_miou"],
                "consistency": r.get("consistency"),
            }
            for name, r in rows
        },
        "learning_rates": {
            "networks": opts.joint_lr,
            "spixelfcn": opts.joint_lr / 10,
            "fusion": opts.fusion_lr,
        },
        "seconds": elapsed,
    }
    write_results(out, results, table)
    print(f"[demo] finished in {elapsed:.0f} s")
    print(f"[demo] panels ({' | '.join(PANEL_TITLES)}): {panels_dir}")
    print(
        f"[demo] logs: {out}/*/<stage>/log.csv; checkpoints: {out}/*/<stage>/checkpoint.pt; "
        f"results: {out / 'results.json'}"
    )
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv`` and run the demo (exit status 2 for a command that cannot run: the output folder holds
    a demo run, another run holds it, a stage refuses its folder or a checkpoint; 1 for what fails while it
    runs: :func:`~examples.voc_joint.cli.run_command`)."""
    parser = build_parser()
    opts = parser.parse_args(argv)
    check_args(parser, opts)
    return run_command(parser, lambda: run_demo(opts))


if __name__ == "__main__":
    from examples.voc_joint.console import tolerant_output
    from examples.voc_joint.signals import run_stoppable

    tolerant_output()  # a path or a character the console cannot encode is escaped, not fatal

    # SIGINT / SIGTERM / SIGHUP: one line, exit status 130 / 143 / 129 (a stage writes its checkpoint first)
    def _cli() -> int:
        main()
        return 0

    sys.exit(
        run_stoppable(
            _cli,
            build_parser().prog,
            "a demo does not continue: the same command with --overwrite runs it again",
        )
    )
