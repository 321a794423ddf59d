"""How a step's values are stored as ferry outputs and read back, chosen by type annotation.

An output named NAME is a folder ``$FERRY_OUTPUT_DIR/NAME/`` holding ``meta.json`` (which
materializer wrote it, and the type) and the data in the materializer's own format:

- JSON-able builtins (``int``, ``float``, ``bool``, ``list``, ``dict``, ``None``) and
  dataclasses: ``data.json``;
- ``str``: ``data.txt``; ``bytes``: ``data.bin``;
- ``pathlib.Path``: the file or directory itself, under ``data``;
- numpy arrays (``.npy``) and pandas frames (Parquet with pyarrow, else CSV) when those
  libraries are installed;
- anything else: pickle, with a one-line warning (pickles break across code versions).

User materializers: subclass ``Materializer`` and ``register_materializer(MyType, MyMaterializer)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import pickle
import shutil
import sys
import typing
from typing import Any, Dict, Optional, Type

__all__ = ["Materializer", "register_materializer", "materializer_for", "save", "load"]


class Materializer:
    """Writes a value into a folder and reads it back."""

    name = "base"

    def save(self, value: Any, folder: pathlib.Path) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def load(self, folder: pathlib.Path, kind: Any) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


class JsonMaterializer(Materializer):
    name = "json"

    def save(self, value, folder):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        (folder / "data.json").write_text(json.dumps(value, sort_keys=True), encoding="utf-8")

    def load(self, folder, kind):
        value = json.loads((folder / "data.json").read_text(encoding="utf-8"))
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            return kind(**value)
        if kind is tuple and isinstance(value, list):
            return tuple(value)
        return value


class TextMaterializer(Materializer):
    name = "text"

    def save(self, value, folder):
        (folder / "data.txt").write_text(value, encoding="utf-8")

    def load(self, folder, kind):
        return (folder / "data.txt").read_text(encoding="utf-8")


class BytesMaterializer(Materializer):
    name = "bytes"

    def save(self, value, folder):
        (folder / "data.bin").write_bytes(value)

    def load(self, folder, kind):
        return (folder / "data.bin").read_bytes()


class PathMaterializer(Materializer):
    name = "path"

    def save(self, value, folder):
        source = pathlib.Path(value)
        target = folder / "data"
        if source.is_dir():
            shutil.copytree(source, target, symlinks=False)
        else:
            shutil.copyfile(source, target)

    def load(self, folder, kind):
        return folder / "data"


class NumpyMaterializer(Materializer):
    name = "numpy"

    def save(self, value, folder):
        import numpy

        numpy.save(folder / "data.npy", value, allow_pickle=False)

    def load(self, folder, kind):
        import numpy

        return numpy.load(folder / "data.npy", allow_pickle=False)


class PandasMaterializer(Materializer):
    name = "pandas"

    def save(self, value, folder):
        try:
            import pyarrow  # noqa: F401

            value.to_parquet(folder / "data.parquet")
        except ImportError:
            value.to_csv(folder / "data.csv", index=False)

    def load(self, folder, kind):
        import pandas

        if (folder / "data.parquet").exists():
            return pandas.read_parquet(folder / "data.parquet")
        return pandas.read_csv(folder / "data.csv")


class PickleMaterializer(Materializer):
    name = "pickle"

    def save(self, value, folder):
        print(
            f"ferry: warning: {type(value).__name__} has no materializer; stored with pickle, "
            "which a change of code can make unreadable (register one with register_materializer)",
            file=sys.stderr,
        )
        with open(folder / "data.pickle", "wb") as f:
            pickle.dump(value, f)

    def load(self, folder, kind):
        with open(folder / "data.pickle", "rb") as f:
            return pickle.load(f)


_BY_NAME: Dict[str, Materializer] = {
    m.name: m
    for m in (
        JsonMaterializer(),
        TextMaterializer(),
        BytesMaterializer(),
        PathMaterializer(),
        NumpyMaterializer(),
        PandasMaterializer(),
        PickleMaterializer(),
    )
}
_USER: Dict[type, Materializer] = {}

JSON_TYPES = (int, float, bool, list, dict, tuple, type(None))


def register_materializer(kind: type, materializer: Type[Materializer]) -> None:
    """Store values of `kind` (and its subclasses) with `materializer`."""
    instance = materializer()
    if not instance.name or instance.name in _BY_NAME and _BY_NAME[instance.name] is not instance:
        instance.name = f"user:{materializer.__module__}.{materializer.__qualname__}"
    _BY_NAME[instance.name] = instance
    _USER[kind] = instance


def _origin(kind: Any) -> Any:
    if typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    return typing.get_origin(kind) or kind


def materializer_for(kind: Any, value: Any = None) -> Materializer:
    """The materializer for an annotation (or, without one, for the value's type)."""
    kind = _origin(kind) if kind not in (None, typing.Any, dataclasses.MISSING) else type(value)
    if isinstance(kind, type):
        for registered, materializer in _USER.items():
            if issubclass(kind, registered):
                return materializer
        if dataclasses.is_dataclass(kind):
            return _BY_NAME["json"]
        if issubclass(kind, bool) or kind in JSON_TYPES:
            return _BY_NAME["json"]
        if issubclass(kind, str):
            return _BY_NAME["text"]
        if issubclass(kind, (bytes, bytearray)):
            return _BY_NAME["bytes"]
        if issubclass(kind, pathlib.PurePath):
            return _BY_NAME["path"]
        module = getattr(kind, "__module__", "")
        if module.startswith("numpy") and kind.__name__ == "ndarray":
            return _BY_NAME["numpy"]
        if module.startswith("pandas") and kind.__name__ == "DataFrame":
            return _BY_NAME["pandas"]
    return _BY_NAME["pickle"]


def type_name(kind: Any) -> Optional[str]:
    kind = _origin(kind)
    if kind in (None, typing.Any):
        return None
    return f"{getattr(kind, '__module__', '')}.{getattr(kind, '__qualname__', repr(kind))}"


def save(value: Any, kind: Any, folder: pathlib.Path) -> None:
    """Stores `value` (annotated `kind`) as the output folder `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    materializer = materializer_for(kind, value)
    materializer.save(value, folder)
    meta = {"materializer": materializer.name, "type": type_name(kind) or type_name(type(value))}
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")


def load(folder: pathlib.Path, kind: Any = None) -> Any:
    """Reads back what `save` stored in `folder`."""
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    materializer = _BY_NAME.get(meta["materializer"])
    if materializer is None:
        raise LookupError(
            f"{folder} was stored by materializer {meta['materializer']!r}, which is not "
            "registered here; register it with ferry.register_materializer"
        )
    return materializer.load(folder, _origin(kind) if kind is not None else None)


def env_suffix(name: str) -> str:
    """ferry's rule for per-step variable names (FERRY_INPUT_<STEP>, FERRY_PARAM_<NAME>)."""
    return "".join(c.upper() if c.isascii() and c.isalnum() else "_" for c in name)


def input_folder(step: str) -> pathlib.Path:
    return pathlib.Path(os.environ["FERRY_INPUT_" + env_suffix(step)])
