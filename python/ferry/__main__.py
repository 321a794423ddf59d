"""``python -m ferry run MODULE:PIPELINE [--param NAME=VALUE]... [--stack NAME] [--no-cache]``
and ``python -m ferry compile MODULE:PIPELINE`` (the pipeline ferry would run, as JSON)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from ._sdk import Pipeline


def _pipeline(target: str) -> Pipeline:
    module, _, attribute = target.partition(":")
    if not attribute:
        raise SystemExit(f"ferry: give MODULE:PIPELINE, e.g. my_project.pipelines:training (got {target!r})")
    sys.path.insert(0, os.getcwd())
    found = getattr(importlib.import_module(module), attribute, None)
    if not isinstance(found, Pipeline):
        raise SystemExit(f"ferry: {module} has no @pipeline named {attribute}")
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ferry")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a pipeline on the project's stack")
    run.add_argument("target", metavar="MODULE:PIPELINE")
    run.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument("--stack")
    run.add_argument("--no-cache", action="store_true")
    compile_ = commands.add_parser("compile", help="print the pipeline ferry would run, as JSON")
    compile_.add_argument("target", metavar="MODULE:PIPELINE")
    args = parser.parse_args(argv)
    found = _pipeline(args.target)
    if args.command == "compile":
        print(json.dumps(found.compile(), indent=2))
        return 0
    options = {}
    if args.stack:
        options["stack"] = args.stack
    if args.no_cache:
        options["enable_cache"] = False
    params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"ferry: write parameters as NAME=VALUE, e.g. --param epochs=10 (got {item!r})")
        kind, default = found.parameters().get(name, (None, value))
        from ._sdk import _param_value

        params[name] = _param_value(value, kind, default)
    result = found.with_options(**options)(**params)
    return 0 if result.succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
