"""split: shuffle the dataset (seeded) and hold out test_fraction of it as the test set."""

import random
import sys

from common import input_file, output, param, read_rows, write_rows

fraction = param("test_fraction", float)
if not 0 < fraction < 1:
    sys.exit(f"test_fraction must be between 0 and 1, found {fraction}")

rows = read_rows(input_file("load", "data.csv"))
random.Random(param("seed", int)).shuffle(rows)
n_test = max(1, round(len(rows) * fraction))
test, train = rows[:n_test], rows[n_test:]

write_rows(output("train.csv"), train)
write_rows(output("test.csv"), test)
print(f"train: {len(train)} rows, test: {len(test)} rows")
