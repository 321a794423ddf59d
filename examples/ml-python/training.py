"""The ML example (examples/ml) written with ferry's Python SDK, standard library only:
logistic regression on a synthetic, seeded dataset, gated on test accuracy.

    load → split → train → evaluate

Run it from this folder:

    python3 training.py                                  # the local stack
    python3 -m ferry run training:training --param epochs=50
    python3 -m ferry run training:training --stack k8s   # the same pipeline on Kubernetes

Each step's cache key covers only the parameters it reads: changing `min_accuracy` runs
`evaluate` again and reuses the trained model.
"""

import math
import random
from dataclasses import dataclass
from typing import Annotated, List, Tuple

from ferry import pipeline, step

Points = List[Tuple[float, float, int]]


@dataclass
class Model:
    w1: float
    w2: float
    bias: float


@step
def load(samples: int, seed: int, noise: float) -> Points:
    rng = random.Random(seed)
    points = []
    for _ in range(samples):
        x1, x2 = rng.uniform(-1, 1), rng.uniform(-1, 1)
        label = 1 if x1 + 0.5 * x2 > 0 else 0
        if rng.random() < noise:
            label = 1 - label
        points.append((x1, x2, label))
    print(f"generated {len(points)} points")
    return points


@step
def split(
    points: Points, seed: int, test_fraction: float
) -> Tuple[Annotated[Points, "train"], Annotated[Points, "test"]]:
    shuffled = list(points)
    random.Random(seed).shuffle(shuffled)
    cut = int(len(shuffled) * (1 - test_fraction))
    print(f"{cut} to train, {len(shuffled) - cut} to test")
    return shuffled[:cut], shuffled[cut:]


def predict(model: Model, x1: float, x2: float) -> float:
    return 1 / (1 + math.exp(-(model.w1 * x1 + model.w2 * x2 + model.bias)))


@step
def train(points: Points, epochs: int, learning_rate: float) -> Model:
    model = Model(0.0, 0.0, 0.0)
    for epoch in range(epochs):
        g1 = g2 = gb = 0.0
        for x1, x2, label in points:
            error = predict(model, x1, x2) - label
            g1, g2, gb = g1 + error * x1, g2 + error * x2, gb + error
        n = len(points)
        model = Model(model.w1 - learning_rate * g1 / n, model.w2 - learning_rate * g2 / n, model.bias - learning_rate * gb / n)
        if epoch % 50 == 0:
            print(f"epoch {epoch}: w=({model.w1:.3f}, {model.w2:.3f}) b={model.bias:.3f}")
    return model


@step
def evaluate(model: Model, points: Points, min_accuracy: float) -> float:
    correct = sum(1 for x1, x2, label in points if (predict(model, x1, x2) > 0.5) == (label == 1))
    accuracy = correct / len(points)
    print(f"test accuracy {accuracy:.3f} (at least {min_accuracy} wanted)")
    if accuracy < min_accuracy:
        raise SystemExit(f"accuracy {accuracy:.3f} is below {min_accuracy}")
    return accuracy


@pipeline(name="ml-python")
def training(
    samples: int = 400,
    seed: int = 7,
    noise: float = 0.02,
    test_fraction: float = 0.25,
    epochs: int = 200,
    learning_rate: float = 0.5,
    min_accuracy: float = 0.85,
):
    train_points, test_points = split(load(samples, seed, noise), seed, test_fraction)
    model = train(train_points, epochs, learning_rate)
    evaluate(model, test_points, min_accuracy)


if __name__ == "__main__":
    run = training()
    print(f"accuracy {run.load('evaluate'):.3f}")
