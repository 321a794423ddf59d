"""The Python SDK against the real ferry binary on the local stack: wiring, names, parameters,
materializers, type mismatches, exceptions, caching.

Run by the README's test command (scripts/test-all.sh), which sets FERRY_BIN and PYTHONPATH;
by hand: `FERRY_BIN=target/debug/ferry PYTHONPATH=python pytest python/tests`.
"""

import dataclasses
import importlib
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import ferry
from ferry import CompileError, materializers

FERRY = os.environ.get("FERRY_BIN")


@pytest.fixture(autouse=True)
def project(tmp_path, monkeypatch):
    """Each test in a project folder of its own (the local stack's store is under it)."""
    assert FERRY and os.path.exists(FERRY), (
        "FERRY_BIN must name a built ferry binary: run scripts/test-all.sh, or "
        "`cargo build -p cli` and set FERRY_BIN=target/debug/ferry"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    # Steps import the SDK and the test's module from here.
    sdk = str(pathlib.Path(ferry.__file__).parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([sdk, str(tmp_path)]))
    return tmp_path


_COUNTER = [0]


def module(source: str):
    """Writes `source` as a module in the project and imports it (a new name each time)."""
    _COUNTER[0] += 1
    name = f"pipes_{_COUNTER[0]}"
    pathlib.Path(f"{name}.py").write_text(textwrap.dedent(source))
    return importlib.import_module(name)


def records():
    runs = pathlib.Path(".ferry/artifacts/runs")
    return sorted(p.name for p in runs.iterdir()) if runs.exists() else []


def test_outputs_wire_steps_together_with_names_from_annotations_and_named_tuples():
    m = module(
        """
        from typing import Annotated, NamedTuple, Tuple
        from ferry import step, pipeline

        class Split(NamedTuple):
            train: list
            test: list

        @step
        def load() -> Tuple[Annotated[list, "rows"], Annotated[str, "source"]]:
            return [1, 2, 3, 4], "memory"

        @step
        def split(rows: list) -> Split:
            return Split(rows[:3], rows[3:])

        @step
        def describe(train: list, test: list, source: str) -> str:
            return f"{len(train)}+{len(test)} rows from {source}"

        @pipeline
        def wired():
            rows, source = load()
            parts = split(rows)
            describe(parts[0], parts[1], source)
        """
    )
    compiled = m.wired.compile()
    assert compiled["steps"]["load"]["outputs"] == ["rows", "source"]
    assert compiled["steps"]["split"]["outputs"] == ["train", "test"]
    assert compiled["steps"]["describe"]["inputs"] == ["load", "split"]
    run = m.wired()
    assert run.succeeded, run.record
    assert run.load("describe") == "3+1 rows from memory"
    assert run.load("split", "train") == [1, 2, 3]


def test_a_step_used_twice_gets_a_distinct_name_or_the_id_given():
    m = module(
        """
        from ferry import step, pipeline

        @step
        def double(x: int) -> int:
            return 2 * x

        @pipeline
        def twice():
            a = double(1)
            b = double(a)
            double(b, id="last")
        """
    )
    assert list(m.twice.compile()["steps"]) == ["double", "double_2", "last"]
    run = m.twice()
    assert run.load("last") == 8
    duplicate = module(
        """
        from ferry import step, pipeline

        @step
        def one() -> int:
            return 1

        @pipeline
        def clash():
            one(id="x")
            one(id="x")
        """
    )
    with pytest.raises(CompileError, match="two steps have the id `x`"):
        duplicate.clash.compile()


def test_parameters_come_from_the_signature_and_are_overridden_by_calls_options_and_the_cli():
    m = module(
        """
        from ferry import step, pipeline

        @step
        def train(epochs: int, rate: float, tag: str, verbose: bool) -> str:
            assert isinstance(epochs, int) and isinstance(rate, float) and isinstance(verbose, bool)
            return f"{epochs} {rate} {tag} {verbose}"

        @pipeline
        def tune(epochs: int = 10, rate: float = 0.1, tag: str = "base", verbose: bool = False):
            train(epochs, rate, tag, verbose)
        """
    )
    compiled = m.tune.compile()
    assert compiled["params"]["epochs"] == {"default": "10"}
    assert compiled["steps"]["train"]["uses_params"] == ["epochs", "rate", "tag", "verbose"]
    assert m.tune().load("train") == "10 0.1 base False"
    assert m.tune(epochs=5, verbose=True).load("train") == "5 0.1 base True"
    assert m.tune.with_options(params={"tag": "opt"})(rate=0.5).load("train") == "10 0.5 opt False"
    cli = subprocess.run(
        [sys.executable, "-m", "ferry", "run", f"{m.__name__}:tune", "--param", "epochs=3"],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    assert ferry.load_artifact(records()[-1], "train") == "3 0.1 base False"
    with pytest.raises(CompileError, match="has no parameter epoch"):
        m.tune(epoch=3)


@dataclasses.dataclass
class Config:
    name: str
    layers: int


class Weights:
    """A type of the test's own, with a materializer of its own."""

    def __init__(self, values):
        self.values = values


class WeightsMaterializer(ferry.Materializer):
    name = "test-weights"

    def save(self, value, folder):
        (folder / "weights.txt").write_text(",".join(map(str, value.values)))

    def load(self, folder, kind):
        return Weights([int(v) for v in (folder / "weights.txt").read_text().split(",")])


class Opaque:
    def __init__(self, x):
        self.x = x


def test_every_builtin_materializer_round_trips_in_a_folder(tmp_path):
    cases = [
        (int, 3, "json"),
        (float, 2.5, "json"),
        (bool, True, "json"),
        (list, [1, "a", None], "json"),
        (dict, {"k": [1, 2]}, "json"),
        (type(None), None, "json"),
        (Config, Config("net", 3), "json"),
        (str, "héllo\n", "text"),
        (bytes, b"\x00\xff", "bytes"),
    ]
    for i, (kind, value, name) in enumerate(cases):
        folder = tmp_path / f"case{i}"
        materializers.save(value, kind, folder)
        assert json.loads((folder / "meta.json").read_text())["materializer"] == name
        assert materializers.load(folder, kind) == value, kind
    # A file and a directory, as `pathlib.Path`.
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "a.txt").write_text("A")
    materializers.save(source, pathlib.Path, tmp_path / "dir")
    loaded = materializers.load(tmp_path / "dir", pathlib.Path)
    assert (loaded / "sub" / "a.txt").read_text() == "A"
    (tmp_path / "f.txt").write_text("F")
    materializers.save(tmp_path / "f.txt", pathlib.Path, tmp_path / "file")
    assert materializers.load(tmp_path / "file", pathlib.Path).read_text() == "F"


def test_numpy_and_pandas_values_are_stored_natively():
    try:
        import numpy
        import pandas
    except ImportError as e:
        pytest.fail(f"the test venv has no {e.name}: run `scripts/servers.sh install` (it installs numpy and pandas)")
    folder = pathlib.Path("np")
    materializers.save(numpy.arange(6).reshape(2, 3), numpy.ndarray, folder)
    assert (folder / "data.npy").exists()
    assert materializers.load(folder, numpy.ndarray).tolist() == [[0, 1, 2], [3, 4, 5]]
    frame = pandas.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    materializers.save(frame, pandas.DataFrame, pathlib.Path("pd"))
    assert materializers.load(pathlib.Path("pd"), pandas.DataFrame).equals(frame)


def test_pickle_is_the_last_resort_with_a_warning_and_user_materializers_win(tmp_path, capsys):
    materializers.save(Opaque(7), Opaque, tmp_path / "p")
    assert "stored with pickle" in capsys.readouterr().err
    assert materializers.load(tmp_path / "p", Opaque).x == 7
    ferry.register_materializer(Weights, WeightsMaterializer)
    materializers.save(Weights([1, 2]), Weights, tmp_path / "w")
    assert (tmp_path / "w" / "weights.txt").read_text() == "1,2"
    assert materializers.load(tmp_path / "w", Weights).values == [1, 2]


def test_a_type_mismatch_between_producer_and_consumer_is_refused_before_anything_runs():
    m = module(
        """
        from ferry import step, pipeline

        @step
        def text() -> str:
            return "x"

        @step
        def count(n: int) -> int:
            return n

        @pipeline
        def mismatched():
            count(text())
        """
    )
    with pytest.raises(CompileError, match="argument `n` is annotated builtins.int, but step `text` output `output` is builtins.str"):
        m.mismatched()
    assert records() == [], "nothing ran"


def test_an_exception_fails_its_step_with_the_traceback_in_its_log():
    m = module(
        """
        from ferry import step, pipeline

        @step
        def fine() -> int:
            return 1

        @step
        def broken(x: int) -> int:
            raise ValueError(f"bad value {x}")

        @step
        def after(x: int) -> int:
            return x

        @pipeline
        def failing():
            after(broken(fine()))
        """
    )
    run = m.failing()
    assert run.status == "failed"
    assert run.record["steps"]["broken"]["status"] == "failed"
    assert run.record["steps"]["after"]["status"] == "skipped"
    log = subprocess.run([FERRY, "logs", run.run_id, "broken"], capture_output=True, text=True).stdout
    assert "Traceback (most recent call last)" in log
    assert "ValueError: bad value 1" in log


def test_an_unchanged_step_is_a_cache_hit_on_the_second_run_and_a_changed_parameter_is_not():
    m = module(
        """
        from ferry import step, pipeline

        @step
        def prepare() -> list:
            return [3, 1, 2]

        @step
        def fit(rows: list, epochs: int) -> int:
            return sum(rows) * epochs

        @pipeline
        def cached(epochs: int = 2):
            fit(prepare(), epochs)
        """
    )
    first = m.cached()
    assert first.record["steps"]["fit"]["status"] == "succeeded"
    second = m.cached()
    assert second.record["steps"]["prepare"]["status"] == "cached"
    assert second.record["steps"]["fit"]["status"] == "cached"
    third = m.cached(epochs=3)
    assert third.record["steps"]["prepare"]["status"] == "cached", "prepare reads no parameter"
    assert third.record["steps"]["fit"]["status"] == "succeeded"
    assert third.load("fit") == 18
    no_cache = m.cached.with_options(enable_cache=False)()
    assert no_cache.record["steps"]["prepare"]["status"] == "succeeded"


def test_steps_called_outside_a_pipeline_are_plain_functions():
    m = module(
        """
        from ferry import step

        @step(retries=2, timeout=30, resources={"cpu": "1"})
        def add(a: int, b: int) -> int:
            return a + b
        """
    )
    assert m.add(2, 3) == 5
    assert m.add.entrypoint(1, 1) == 2
