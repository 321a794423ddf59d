"""``@step`` and ``@pipeline``: Python functions compiled to ferry's pipeline model.

Calling steps inside a pipeline function does not run them: it records which step's outputs
feed which step's arguments. The record compiles to a pipeline in the schema of
``pipeline.yaml`` (as JSON), which ``ferry run -`` validates with its own rules and runs on the
project's stack; each step runs as ``python -m ferry._runner MODULE PIPELINE STEP``, which
compiles the same pipeline, loads the step's inputs with their materializers, calls the
function and stores what it returns.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import typing
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import materializers

__all__ = ["step", "pipeline", "load_artifact", "PipelineRun", "CompileError", "PipelineFailed"]

DEFAULT_OUTPUT = "output"


class CompileError(Exception):
    """The pipeline cannot be compiled: nothing was run."""


class PipelineFailed(Exception):
    """ferry ran the pipeline and it did not succeed (the run's record is `.run`)."""

    def __init__(self, run: "PipelineRun"):
        super().__init__(f"run {run.run_id} of pipeline `{run.pipeline}` {run.status}: {run.error or 'see `ferry runs show ' + run.run_id + '`'}")
        self.run = run


# ---- what a pipeline function records --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Artifact:
    """An output of a step invocation, passed to another step."""

    step: str
    name: str
    kind: Any


@dataclasses.dataclass(frozen=True)
class Param:
    """A pipeline parameter, passed to a step."""

    name: str
    kind: Any


@dataclasses.dataclass
class Invocation:
    id: str
    step: "Step"
    arguments: Dict[str, Any]


class _Recording:
    """The invocations of one compile, in call order."""

    def __init__(self) -> None:
        self.invocations: Dict[str, Invocation] = {}

    def unique_id(self, wanted: str, explicit: bool) -> str:
        if wanted not in self.invocations:
            return wanted
        if explicit:
            raise CompileError(f"two steps have the id `{wanted}`")
        n = 2
        while f"{wanted}_{n}" in self.invocations:
            n += 1
        return f"{wanted}_{n}"


_RECORDING: List[_Recording] = []


def _outputs(function: Callable) -> List[Tuple[str, Any]]:
    """Output names and types from a step's return annotation."""
    hints = typing.get_type_hints(function, include_extras=True)
    ret = hints.get("return", inspect.Signature.empty)
    if ret in (inspect.Signature.empty, None, type(None)):
        return [] if ret is not inspect.Signature.empty else [(DEFAULT_OUTPUT, None)]

    def one(kind: Any, default: str) -> Tuple[str, Any]:
        if typing.get_origin(kind) is typing.Annotated:
            args = typing.get_args(kind)
            names = [a for a in args[1:] if isinstance(a, str)]
            return (names[0] if names else default, args[0])
        return (default, kind)

    if isinstance(ret, type) and issubclass(ret, tuple) and hasattr(ret, "_fields"):
        field_hints = typing.get_type_hints(ret, include_extras=True)
        return [(f, field_hints.get(f)) for f in ret._fields]
    if typing.get_origin(ret) is tuple:
        args = typing.get_args(ret)
        if args and args[-1] is not Ellipsis:
            return [one(a, f"output_{i}") for i, a in enumerate(args)]
    return [one(ret, DEFAULT_OUTPUT)]


def _is_subtype(produced: Any, wanted: Any) -> bool:
    """Whether an output of type `produced` may feed an argument annotated `wanted`."""
    produced, wanted = materializers._origin(produced), materializers._origin(wanted)
    if produced in (None, typing.Any) or wanted in (None, typing.Any, inspect.Parameter.empty):
        return True
    if not isinstance(produced, type) or not isinstance(wanted, type):
        return True
    if wanted is float and produced is int:
        return True
    return issubclass(produced, wanted)


class Step:
    """A function decorated with ``@step``."""

    def __init__(self, function: Callable, **options: Any) -> None:
        functools.update_wrapper(self, function)
        self.function = function
        self.options = options
        self.name = options.get("name") or function.__name__
        self.outputs = _outputs(function)
        self.signature = inspect.signature(function)
        self.hints = typing.get_type_hints(function, include_extras=True)

    def __call__(self, *args: Any, id: Optional[str] = None, **kwargs: Any) -> Any:
        if not _RECORDING:
            # Outside a pipeline a step is a plain function.
            return self.function(*args, **kwargs)
        recording = _RECORDING[-1]
        invocation_id = recording.unique_id(id or self.name, id is not None)
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise CompileError(f"step `{invocation_id}`: {e}") from None
        bound.apply_defaults()
        for arg, value in bound.arguments.items():
            wanted = self.hints.get(arg)
            if isinstance(value, Artifact) and not _is_subtype(value.kind, wanted):
                raise CompileError(
                    f"step `{invocation_id}` argument `{arg}` is annotated "
                    f"{materializers.type_name(wanted)}, but step `{value.step}` output "
                    f"`{value.name}` is {materializers.type_name(value.kind)}"
                )
            if isinstance(value, (list, tuple, dict)) and _has_artifact(value):
                raise CompileError(
                    f"step `{invocation_id}` argument `{arg}`: pass step outputs directly, not inside a {type(value).__name__}"
                )
        recording.invocations[invocation_id] = Invocation(invocation_id, self, dict(bound.arguments))
        artifacts = [Artifact(invocation_id, name, kind) for name, kind in self.outputs]
        if not artifacts:
            return None
        if len(artifacts) == 1:
            return artifacts[0]
        return tuple(artifacts)

    def entrypoint(self, *args: Any, **kwargs: Any) -> Any:
        """The function itself (ZenML's name for it)."""
        return self.function(*args, **kwargs)


def _has_artifact(value: Any) -> bool:
    items = value.values() if isinstance(value, dict) else value
    return any(isinstance(v, Artifact) for v in items)


def step(_function: Optional[Callable] = None, **options: Any) -> Any:
    """Make a function a pipeline step. Options: ``name``, ``retries``, ``timeout`` (seconds or
    a duration such as ``"30m"``), ``cache`` or ``enable_cache``, ``resources``
    (``{"cpu": "2", "memory": "4Gi", "gpu": 1}``), ``profile``, ``image``, ``env``."""
    if _function is not None:
        return Step(_function, **options)
    return lambda function: Step(function, **options)


# ---- pipelines -------------------------------------------------------------------------------


def _param_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _param_value(text: str, kind: Any, default: Any) -> Any:
    """A parameter's value from ferry's text (`FERRY_PARAM_*`, `--param`)."""
    kind = materializers._origin(kind) if kind not in (None, inspect.Parameter.empty) else type(default)
    if kind is str or kind is type(None):
        return text
    if kind is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"`{text}` is not a boolean")
    if kind in (int, float):
        return kind(text)
    return json.loads(text)


class Pipeline:
    """A function decorated with ``@pipeline``."""

    def __init__(self, function: Callable, **options: Any) -> None:
        functools.update_wrapper(self, function)
        self.function = function
        self.options = options
        self.name = options.get("name") or function.__name__.replace("_", "-")
        self.signature = inspect.signature(function)
        self.hints = typing.get_type_hints(function, include_extras=True)

    def with_options(self, **options: Any) -> "Pipeline":
        """The same pipeline with other options (``enable_cache``, ``stack``, ``params``)."""
        clone = copy.copy(self)
        merged = dict(self.options)
        params = dict(merged.get("params") or {})
        params.update(options.pop("params", None) or {})
        merged.update(options)
        merged["params"] = params
        clone.options = merged
        return clone

    # -- parameters

    def parameters(self) -> Dict[str, Tuple[Any, Any]]:
        """name → (annotation, default); defaults overridden by ``with_options(params=...)``."""
        result = {}
        overrides = self.options.get("params") or {}
        for name, parameter in self.signature.parameters.items():
            default = overrides.get(name, parameter.default)
            result[name] = (self.hints.get(name, parameter.annotation), default)
        return result

    def _values(self, given: Dict[str, Any]) -> Dict[str, Any]:
        values = {}
        for name, (kind, default) in self.parameters().items():
            if name in given:
                values[name] = given[name]
            elif default is not inspect.Parameter.empty:
                values[name] = default
            else:
                raise CompileError(f"pipeline `{self.name}` needs parameter `{name}` (no default)")
        unknown = set(given) - set(self.parameters())
        if unknown:
            raise CompileError(f"pipeline `{self.name}` has no parameter {', '.join(sorted(unknown))}")
        return values

    # -- compiling

    def record(self) -> _Recording:
        """Runs the pipeline function with parameter placeholders, recording the steps."""
        recording = _Recording()
        _RECORDING.append(recording)
        try:
            placeholders = {name: Param(name, kind) for name, (kind, _) in self.parameters().items()}
            self.function(**placeholders)
        finally:
            _RECORDING.pop()
        if not recording.invocations:
            raise CompileError(f"pipeline `{self.name}` calls no step")
        return recording

    def compile(self, module: Optional[str] = None, python: Optional[str] = None) -> Dict[str, Any]:
        """The pipeline in ferry's schema (what ``ferry run -`` reads)."""
        recording = self.record()
        module = module or _module_of(self.function)
        attribute = self.function.__name__
        # The interpreter the steps run with: this one, where they run on this machine; in a
        # container image, the image's (FERRY_PYTHON=python3, found on the image's PATH).
        python = python or os.environ.get("FERRY_PYTHON") or sys.executable
        params = {}
        for name, (_, default) in self.parameters().items():
            params[name] = {} if default is inspect.Parameter.empty else {"default": _param_text(default)}
        steps: Dict[str, Any] = {}
        for invocation in recording.invocations.values():
            options = invocation.step.options
            inputs = sorted({v.step for v in invocation.arguments.values() if isinstance(v, Artifact)})
            uses = sorted({v.name for v in invocation.arguments.values() if isinstance(v, Param)})
            spec: Dict[str, Any] = {
                "command": [python, "-m", "ferry._runner", module, attribute, invocation.id],
                "outputs": [name for name, _ in invocation.step.outputs],
                "uses_params": uses,
            }
            if inputs:
                spec["inputs"] = inputs
            cache = options.get("cache", options.get("enable_cache"))
            if cache is None:
                cache = self.options.get("enable_cache")
            if cache is not None:
                spec["cache"] = bool(cache)
            if options.get("retries"):
                spec["retries"] = int(options["retries"])
            if options.get("timeout") is not None:
                timeout = options["timeout"]
                spec["timeout"] = f"{timeout}s" if isinstance(timeout, (int, float)) else str(timeout)
            for key in ("resources", "profile", "image", "env"):
                if options.get(key):
                    spec[key] = options[key]
            steps[invocation.id] = spec
        return {"name": self.name, "params": params, "steps": steps}

    # -- running

    def __call__(self, **params: Any) -> "PipelineRun":
        """Compiles the pipeline and runs it on the project's stack with the ferry binary."""
        values = self._values(params)
        compiled = self.compile()
        command = [_ferry(), "run", "-", "--output", "json"]
        stack = self.options.get("stack")
        if stack:
            command += ["--stack", stack]
        if self.options.get("enable_cache") is False:
            command.append("--no-cache")
        for name, value in values.items():
            command += ["--param", f"{name}={_param_text(value)}"]
        return _run(command, json.dumps(compiled), width=max(len(n) for n in compiled["steps"]))


def _module_of(function: Callable) -> str:
    module = function.__module__
    if module != "__main__":
        return module
    # A script run directly: its file, relative to where ferry runs the steps.
    path = pathlib.Path(sys.modules["__main__"].__file__).resolve()
    try:
        return str(path.relative_to(pathlib.Path.cwd()))
    except ValueError:
        return str(path)


def pipeline(_function: Optional[Callable] = None, **options: Any) -> Any:
    """Make a function a pipeline. Options: ``name``, ``enable_cache``, ``stack``, ``params``
    (default values for the function's arguments)."""
    if _function is not None:
        return Pipeline(_function, **options)
    return lambda function: Pipeline(function, **options)


# ---- the ferry binary ------------------------------------------------------------------------


def _ferry() -> str:
    found = os.environ.get("FERRY_BIN") or shutil.which("ferry")
    if not found:
        raise FileNotFoundError(
            "the `ferry` binary is not on PATH: install the ferry wheel (pip install ferry) or set FERRY_BIN"
        )
    return found


@dataclasses.dataclass
class PipelineRun:
    run_id: str
    pipeline: str
    status: str
    error: Optional[str]
    record: Dict[str, Any]

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def load(self, step: str, name: str = DEFAULT_OUTPUT, kind: Any = None) -> Any:
        return load_artifact(self.run_id, step, name, kind)


def _run(command: List[str], compiled: str, width: int = 0) -> PipelineRun:
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(compiled)
    process.stdin.close()
    record = None
    for line in process.stdout:
        event = json.loads(line)
        kind = event.get("event")
        if kind == "log":
            print(f"{event['step']:<{width}} │ {event['line']}", flush=True)
        elif kind == "step_status" and event["status"] not in ("pending", "running"):
            print(f"{event['step']:<{width}} │ {event['status']}", flush=True)
        elif kind == "notice" and event.get("step") and not event["text"].startswith("cached:"):
            # A cache hit's notice is the `cached` status line that follows.
            print(f"{event['step']:<{width}} │ {event['text']}", flush=True)
        elif kind == "result":
            record = event["record"]
    code = process.wait()
    if record is None:
        raise RuntimeError(f"ferry exited with code {code} before running the pipeline (its error is above)")
    run = PipelineRun(record["run_id"], record["pipeline"], record["status"], record.get("error"), record)
    print(f"run {run.run_id}: {run.status}", flush=True)
    return run


def load_artifact(run: str, step: str, name: str = DEFAULT_OUTPUT, kind: Any = None) -> Any:
    """The value a step of a run stored as output `name` (``ferry artifacts`` underneath)."""
    with tempfile.TemporaryDirectory() as folder:
        got = subprocess.run(
            [_ferry(), "artifacts", "get", run, step, "-o", folder],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if got.returncode != 0:
            raise LookupError(f"cannot get the outputs of step `{step}` of run {run}: {got.stderr.strip()}")
        return materializers.load(pathlib.Path(folder) / name, kind)
