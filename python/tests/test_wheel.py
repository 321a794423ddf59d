"""The `ferry` wheel, installed into a fresh venv as a user would: the binary on PATH, the
in-tree plugins found beside it, and the SDK running a pipeline with nothing else installed.

The test command builds the wheel first (scripts/build-wheel.sh) and names it in FERRY_WHEEL.
"""

import os
import pathlib
import subprocess
import sys
import textwrap
import venv

IN_TREE_PLUGINS = ["kubernetes", "example-store", "storage-azure", "storage-gcs", "storage-s3"]


def test_the_wheel_installs_ferry_its_plugins_and_the_sdk_into_a_fresh_venv(tmp_path):
    wheel = os.environ.get("FERRY_WHEEL")
    assert wheel and os.path.exists(wheel), (
        "FERRY_WHEEL must name the built wheel: run scripts/build-wheel.sh (scripts/test-all.sh does)"
    )
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-index", wheel], check=True)
    ferry = env_dir / "bin" / "ferry"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FERRY_", "PYTHON"))}
    clean["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{clean.get('PATH', '')}"

    version = subprocess.run([ferry, "--version"], capture_output=True, text=True, env=clean)
    assert version.returncode == 0 and version.stdout.startswith("ferry "), version
    listed = subprocess.run([ferry, "plugins", "list", "--output", "json"], capture_output=True, text=True, env=clean, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    for name in IN_TREE_PLUGINS:
        assert f'"{name}"' in listed.stdout, f"{name} not found by the installed ferry: {listed.stdout}"
    assert "lib/ferry/plugins" in listed.stdout

    project = tmp_path / "project"
    project.mkdir()
    (project / "flow.py").write_text(textwrap.dedent(
        """
        from ferry import step, pipeline

        @step
        def numbers(n: int) -> list:
            return list(range(n))

        @step
        def total(xs: list) -> int:
            return sum(xs)

        @pipeline
        def flow(n: int = 4):
            total(numbers(n))

        if __name__ == "__main__":
            run = flow(n=5)
            print("total", run.load("total"))
        """
    ))
    ran = subprocess.run([python, "flow.py"], capture_output=True, text=True, env=clean, cwd=project)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "total 10" in ran.stdout, ran.stdout
