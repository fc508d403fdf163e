"""Without the examples extra (no torchvision), ``pytest`` skips the pipeline's tests with a reason instead of
failing: a user who installs ``.[test]`` only, for the layer packages, gets a green suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_pipeline_tests_skip_without_torchvision(tmp_path: Path) -> None:
    shadow = tmp_path / "torchvision"  # found first on the path: importing it fails as a missing package does
    shadow.mkdir()
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torchvision'\", name='torchvision')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    targets = [
        "examples",  # the pipeline's doctests: not collected (their modules cannot be imported)
        "benchmarks",  # the benchmarks' doctests: bench_joint.py's not collected (it imports the pipeline)
        "tests/examples/test_train.py",  # imports the pipeline at module level
        "tests/examples/test_models.py",  # imports it inside the tests
        "tests/test_doc_commands.py::test_a_stale_command_fails",  # train.py lines skip, gpu_check's runs
        # imports every benchmark script, bench_joint among them (the example's models): skips
        "tests/test_benchmarks.py::test_the_benchmarks_page_names_the_scripts_without_a_device_"
        "and_those_the_gpu_check_runs",
    ]

    def run_pytest(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *args]
        return subprocess.run(
            command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )

    run = run_pytest("-rs", *targets)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "needs torchvision" in out and "examples/voc_joint" not in out.split("short test summary")[0]
    summary = out.strip().splitlines()[-1]
    assert " passed" in summary and " skipped" in summary and "error" not in summary, summary
    # every test file, not only those above, is collected without an import error (a module-level import of
    # the pipeline without importorskip errors here)
    collect = run_pytest("--collect-only", "tests")
    assert collect.returncode == 0, (collect.stdout + collect.stderr)[-3000:]
