# A pipeline file as ZenML's docs write them, using only the subset ferry's SDK covers.
# The one change for ferry is the import line (ZenML: `from zenml import pipeline, step`).
from typing import Annotated, Tuple

from ferry import pipeline, step


@step
def load_data() -> Tuple[Annotated[list, "features"], Annotated[list, "labels"]]:
    features = [[1.0, 2.0], [2.0, 1.0], [3.0, 4.0], [4.0, 3.0]]
    labels = [0, 0, 1, 1]
    return features, labels


@step(enable_cache=False)
def train_model(features: list, labels: list, learning_rate: float = 0.1) -> Annotated[dict, "model"]:
    threshold = sum(sum(f) for f in features) / len(features)
    return {"threshold": threshold, "learning_rate": learning_rate}


@step
def evaluate_model(model: dict, features: list, labels: list) -> Annotated[float, "accuracy"]:
    predictions = [1 if sum(f) > model["threshold"] else 0 for f in features]
    return sum(p == l for p, l in zip(predictions, labels)) / len(labels)


@pipeline(enable_cache=True)
def training_pipeline(learning_rate: float = 0.05):
    features, labels = load_data()
    model = train_model(features=features, labels=labels, learning_rate=learning_rate)
    evaluate_model(model=model, features=features, labels=labels, id="evaluate")


if __name__ == "__main__":
    training_pipeline.with_options(enable_cache=False)()
    run = training_pipeline(learning_rate=0.2)
    print("accuracy", run.load("evaluate", "accuracy"))
