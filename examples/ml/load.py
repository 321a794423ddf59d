"""load: generate a deterministic, (almost) linearly separable 2-feature dataset as CSV."""

import random

from common import output, param, write_rows

samples = param("samples", int)
noise = param("noise", float)
rng = random.Random(param("seed", int))

# The hidden boundary: label 1 when 1.5*x1 - x2 + 0.25 > 0.
rows = []
for _ in range(samples):
    x1, x2 = rng.uniform(-2, 2), rng.uniform(-2, 2)
    label = int(1.5 * x1 - x2 + 0.25 > 0)
    if rng.random() < noise:
        label = 1 - label
    rows.append((x1, x2, label))

write_rows(output("data.csv"), rows)
positives = sum(r[2] for r in rows)
print(f"generated {samples} points ({positives} positive, {samples - positives} negative, "
      f"{noise:.0%} label noise)")
