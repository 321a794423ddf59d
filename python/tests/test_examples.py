"""examples/ml-python on the local stack, as its docstring says to run it."""

import os
import pathlib
import shutil
import subprocess
import sys

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "ml-python"


def statuses(output):
    """step -> its last status line (`step │ status`)."""
    found = {}
    for line in output.splitlines():
        step, sep, text = line.partition("│")
        if sep and text.strip() in ("succeeded", "cached", "failed", "skipped", "cancelled"):
            found[step.strip()] = text.strip()
    return found


def ferry_run(project, *params):
    command = [sys.executable, "-m", "ferry", "run", "training:training"]
    for p in params:
        command += ["--param", p]
    ran = subprocess.run(command, capture_output=True, text=True, cwd=project)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran.stdout


def test_the_ml_python_example_trains_gates_on_accuracy_and_reuses_what_a_parameter_does_not_touch(tmp_path):
    project = tmp_path / "ml-python"
    shutil.copytree(EXAMPLE, project)
    direct = subprocess.run([sys.executable, "training.py"], capture_output=True, text=True, cwd=project)
    assert direct.returncode == 0, direct.stdout + direct.stderr
    assert "accuracy 0.9" in direct.stdout, direct.stdout

    first = ferry_run(project)
    assert "evaluate │ test accuracy" in first, first
    again = ferry_run(project)
    assert statuses(again) == {"load": "cached", "split": "cached", "train": "cached", "evaluate": "cached"}, again
    # Only evaluate reads min_accuracy.
    gate = ferry_run(project, "min_accuracy=0.9")
    assert statuses(gate) == {"load": "cached", "split": "cached", "train": "cached", "evaluate": "succeeded"}, gate
    failing = subprocess.run(
        [sys.executable, "-m", "ferry", "run", "training:training", "--param", "min_accuracy=0.999"],
        capture_output=True,
        text=True,
        cwd=project,
    )
    assert failing.returncode == 1, failing.stdout
    assert "below 0.999" in failing.stdout, failing.stdout


def test_a_zenml_style_pipeline_file_runs_with_only_its_import_line_changed(tmp_path):
    source = pathlib.Path(__file__).parent / "zenml" / "zenml_style.py"
    text = source.read_text()
    # The file as ZenML users have it, then the one line ferry changes.
    zenml = text.replace("from ferry import pipeline, step", "from zenml import pipeline, step")
    assert zenml != text
    (tmp_path / "zenml_style.py").write_text(zenml.replace("from zenml import pipeline, step", "from ferry import pipeline, step"))
    ran = subprocess.run([sys.executable, "zenml_style.py"], capture_output=True, text=True, cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "accuracy 1.0" in ran.stdout, ran.stdout
