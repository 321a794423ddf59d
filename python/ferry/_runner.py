"""One step of a compiled pipeline, as ferry runs it: ``python -m ferry._runner MODULE PIPELINE STEP``.

Compiles the same pipeline (its parameters from ``FERRY_PARAM_*``), loads the step's inputs
from the upstream steps' outputs (``FERRY_INPUT_<STEP>/<name>``) with the materializer their
annotation chooses, calls the function and stores what it returns under
``FERRY_OUTPUT_DIR/<name>``. An exception leaves its traceback in the step's log and fails the
step.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pathlib
import sys
import traceback

from . import materializers
from ._sdk import Artifact, Param, Pipeline, _param_value, _RECORDING


def _import(module: str):
    sys.path.insert(0, os.getcwd())
    if module.endswith(".py"):
        # A script run directly: loaded under another name, so that its
        # `if __name__ == "__main__":` does not run the pipeline again.
        spec = importlib.util.spec_from_file_location("ferry_pipeline_script", module)
        loaded = importlib.util.module_from_spec(spec)
        sys.modules["ferry_pipeline_script"] = loaded
        spec.loader.exec_module(loaded)
        return loaded
    return importlib.import_module(module)


def main(argv) -> int:
    module_name, attribute, step_id = argv
    module = _import(module_name)
    found = getattr(module, attribute, None)
    if not isinstance(found, Pipeline):
        print(f"ferry: {module_name} has no pipeline `{attribute}`", file=sys.stderr)
        return 2
    recording = found.record()
    invocation = recording.invocations.get(step_id)
    if invocation is None:
        print(f"ferry: pipeline `{found.name}` has no step `{step_id}` any more", file=sys.stderr)
        return 2
    parameters = found.parameters()
    step = invocation.step
    kwargs = {}
    for arg, value in invocation.arguments.items():
        if isinstance(value, Artifact):
            folder = materializers.input_folder(value.step) / value.name
            kwargs[arg] = materializers.load(folder, step.hints.get(arg, value.kind))
        elif isinstance(value, Param):
            kind, default = parameters[value.name]
            text = os.environ.get("FERRY_PARAM_" + materializers.env_suffix(value.name))
            kwargs[arg] = default if text is None else _param_value(text, kind, default)
        else:
            kwargs[arg] = value
    result = step.function(**kwargs)
    out = pathlib.Path(os.environ["FERRY_OUTPUT_DIR"])
    outputs = step.outputs
    if not outputs:
        return 0
    values = [result] if len(outputs) == 1 else list(result)
    if len(values) != len(outputs):
        print(
            f"ferry: step `{step_id}` returned {len(values)} values but its annotation names {len(outputs)} outputs",
            file=sys.stderr,
        )
        return 1
    for (name, kind), value in zip(outputs, values):
        materializers.save(value, kind, out / name)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception:  # the traceback is the step's log
        traceback.print_exc()
        sys.exit(1)
