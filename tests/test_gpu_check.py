"""bench/gpu_check.sh and bench/gpu_wheels.sh: syntax, the step list, one cheap step of the dry run, a failing step,
and the offline install of only the wheels that are missing. (The whole dry run takes minutes: not a test.)"""

import base64
import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
GPU_CHECK = REPO / "bench" / "gpu_check.sh"
GPU_WHEELS = REPO / "bench" / "gpu_wheels.sh"
STEPS = ["wheels", "data", "mlm_fp16_zero1", "glue_fp16", "mfu_bert_large", "mfu_bert_base", "mlm_bf16_zero2",
         "mlm_compile", "pipeline", "pipeline_workers"]


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    """Run a command from the repository root with this test's Python as PYTHON; text output."""
    env = {**os.environ, "PYTHON": sys.executable, **kwargs.pop("env", {})}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, **kwargs)


def summary_rows(results) -> dict[str, list[str]]:
    """{step: [result, seconds, target, figures]} from the summary table."""
    rows = {}
    for line in (results / "summary.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        if line.startswith("| ") and cells[0] in STEPS:
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.parametrize("script", [GPU_CHECK, GPU_WHEELS], ids=lambda path: path.name)
def test_the_scripts_parse(script):
    assert run("bash", "-n", str(script)).returncode == 0


def test_every_step_is_listed_documented_and_defined():
    text = GPU_CHECK.read_text()
    listed = run("bash", str(GPU_CHECK), "--help")
    assert listed.returncode == 2
    assert re.search(r"^steps: (.*)$", listed.stderr, re.M).group(1).split() == STEPS
    header = text.split("set -uo pipefail")[0]
    for step in STEPS:
        assert re.search(rf"^#   {step} ", header, re.M), f"{step} is not documented in the header"
        assert re.search(rf"^step_{step}\(\) \{{", text, re.M), f"no step_{step} function"


def test_an_unknown_step_is_refused_with_the_list():
    result = run("bash", str(GPU_CHECK), "--dry-run", "--only", "mfu_bert_base,nope")
    assert result.returncode == 2
    assert "--only: no step nope" in result.stderr and "steps: wheels data" in result.stderr


def test_one_cheap_step_of_the_dry_run_passes_with_its_figures(tmp_path):
    result = run("bash", str(GPU_CHECK), "--dry-run", "--only", "mfu_bert_base", "--work", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = summary_rows(tmp_path / "results")
    assert list(rows) == ["mfu_bert_base"]
    outcome, _, target, figures = rows["mfu_bert_base"]
    assert outcome == "pass" and target == "MFU >= 45%: n/a (dry run)"
    assert re.search(
        r"batch 4: budget_bert compiled [\d,]+ tok/s, MFU [\d.]+%, bert .* modernbert .* "
        r"budget_bert eager [\d,]+ tok/s, MFU [\d.]+%; peak 1 TFLOP/s", figures
    )
    assert (tmp_path / "results" / "mfu_small.json").is_file()


def test_a_failing_step_is_reported_in_the_table_and_the_exit_code(tmp_path):
    result = run("bash", str(GPU_CHECK), "--dry-run", "--only", "glue_fp16", "--work", str(tmp_path))
    assert result.returncode == 1
    outcome, _, _, figures = summary_rows(tmp_path / "results")["glue_fp16"]
    assert outcome == "FAIL" and "no pretraining snapshot: run mlm_fp16_zero1 first" in figures


def make_wheel(folder, name: str) -> None:
    """A minimal wheel of distribution `name` 1.0 holding the module `name`."""
    files = {
        f"{name}/__init__.py": b"VALUE = 1\n",
        f"{name}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{name}-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for path, data in files.items()
    ]
    files[f"{name}-1.0.dist-info/RECORD"] = ("\n".join([*record, f"{name}-1.0.dist-info/RECORD,,"]) + "\n").encode()
    with zipfile.ZipFile(folder / f"{name}-1.0-py3-none-any.whl", "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)


def test_the_install_takes_only_the_wheels_whose_distribution_is_missing(tmp_path):
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    wheels.mkdir()
    make_wheel(wheels, "pytest")  # installed here: kept, not replaced by this fake
    make_wheel(wheels, "gpu_check_probe")
    result = run("bash", str(GPU_WHEELS), "install", str(wheels), str(target))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the image has pytest" in result.stderr and "installing into" in result.stdout
    assert sorted(path.name for path in target.iterdir() if not path.name.startswith(".")) == [
        "gpu_check_probe", "gpu_check_probe-1.0.dist-info"
    ]


def test_the_install_refuses_a_folder_without_wheels(tmp_path):
    result = run("bash", str(GPU_WHEELS), "install", str(tmp_path), str(tmp_path / "site"))
    assert result.returncode == 1 and "run bench/gpu_wheels.sh download first" in result.stderr
