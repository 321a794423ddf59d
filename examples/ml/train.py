"""train: logistic regression by plain (full-batch) gradient descent; writes model.json."""

import json
import math

from common import input_file, output, param, predict, read_rows

epochs = param("epochs", int)
lr = param("learning_rate", float)
rows = read_rows(input_file("split", "train.csv"))
n = len(rows)

model = {"weights": [0.0, 0.0], "bias": 0.0}
report_every = max(1, epochs // 5)
for epoch in range(1, epochs + 1):
    g1 = g2 = gb = loss = 0.0
    for x1, x2, y in rows:
        p = predict(model, x1, x2)
        err = p - y
        g1 += err * x1
        g2 += err * x2
        gb += err
        loss -= math.log(max(p, 1e-12)) if y else math.log(max(1 - p, 1e-12))
    model["weights"][0] -= lr * g1 / n
    model["weights"][1] -= lr * g2 / n
    model["bias"] -= lr * gb / n
    if epoch % report_every == 0 or epoch == epochs:
        print(f"epoch {epoch:>5}/{epochs}  log-loss {loss / n:.4f}")

model.update(epochs=epochs, learning_rate=lr, train_rows=n, final_loss=round(loss / n, 6))
with open(output("model.json"), "w") as f:
    json.dump(model, f, indent=2)
w1, w2 = model["weights"]
print(f"model: p(label=1) = sigmoid({w1:.3f}*x1 + {w2:.3f}*x2 + {model['bias']:.3f})")
