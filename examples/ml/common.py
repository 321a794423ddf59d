"""Helpers shared by the steps of examples/ml (python3 standard library only)."""

import csv
import math
import os
import sys

FEATURES = ("x1", "x2")


def param(name, kind=str):
    """The value of pipeline parameter `name` (ferry sets FERRY_PARAM_<NAME>)."""
    var = "FERRY_PARAM_" + name.upper()
    raw = os.environ.get(var)
    if raw is None:
        sys.exit(f"{var} is not set: run this script with `ferry run examples/ml`")
    try:
        return kind(raw)
    except ValueError:
        sys.exit(f"parameter {name} must be a {kind.__name__}, found {raw!r}")


def output(name):
    """Path of an output file of this step."""
    return os.path.join(os.environ["FERRY_OUTPUT_DIR"], name)


def input_file(step, name):
    """Path of file `name` written by input step `step`."""
    var = "FERRY_INPUT_" + step.upper().replace("-", "_")
    return os.path.join(os.environ[var], name)


def write_rows(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(FEATURES + ("label",))
        for x1, x2, label in rows:
            writer.writerow((f"{x1:.6f}", f"{x2:.6f}", label))


def read_rows(path):
    with open(path, newline="") as f:
        return [(float(r["x1"]), float(r["x2"]), int(r["label"])) for r in csv.DictReader(f)]


def sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def predict(model, x1, x2):
    """Probability that (x1, x2) has label 1."""
    w1, w2 = model["weights"]
    return sigmoid(w1 * x1 + w2 * x2 + model["bias"])
