"""ferry's Python SDK: pipelines as Python functions, run by ferry's engine.

    from ferry import step, pipeline

    @step
    def load() -> dict: ...

    @pipeline
    def training(epochs: int = 10):
        train(load(), epochs=epochs)

    if __name__ == "__main__":
        training(epochs=5)          # or: python -m ferry run my_module:training --param epochs=5

Standard library only; numpy and pandas values are stored natively when those libraries are
installed.
"""

from ._sdk import (
    CompileError,
    PipelineFailed,
    PipelineRun,
    load_artifact,
    pipeline,
    step,
)
from .materializers import Materializer, register_materializer

__all__ = [
    "step",
    "pipeline",
    "load_artifact",
    "PipelineRun",
    "PipelineFailed",
    "CompileError",
    "Materializer",
    "register_materializer",
]
__version__ = "0.2.0"
