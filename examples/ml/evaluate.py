"""evaluate: score the model on the test set, write metrics.json, fail below min_accuracy."""

import json
import sys

from common import input_file, output, param, predict, read_rows

min_accuracy = param("min_accuracy", float)
with open(input_file("train", "model.json")) as f:
    model = json.load(f)
rows = read_rows(input_file("split", "test.csv"))

tp = fp = tn = fn = 0
for x1, x2, y in rows:
    guess = int(predict(model, x1, x2) >= 0.5)
    if guess and y:
        tp += 1
    elif guess:
        fp += 1
    elif y:
        fn += 1
    else:
        tn += 1

accuracy = (tp + tn) / len(rows)
metrics = {
    "accuracy": round(accuracy, 4),
    "precision": round(tp / (tp + fp), 4) if tp + fp else None,
    "recall": round(tp / (tp + fn), 4) if tp + fn else None,
    "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    "test_rows": len(rows),
    "min_accuracy": min_accuracy,
    "passed": accuracy >= min_accuracy,
}
with open(output("metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2)

print(json.dumps(metrics, indent=2))
if accuracy < min_accuracy:
    print(f"FAIL: accuracy {accuracy:.2%} is below min_accuracy {min_accuracy:.2%}")
    sys.exit(1)
print(f"PASS: accuracy {accuracy:.2%} >= min_accuracy {min_accuracy:.2%}")
