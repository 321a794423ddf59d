# A ZenML-style chain of 10 trivial steps. The benchmark runs this file twice: as it is, with
# ferry, and with the import line changed to `from zenml import pipeline, step`.
from ferry import pipeline, step


@step
def start() -> int:
    return 0


@step
def inc(x: int) -> int:
    return x + 1


@pipeline(enable_cache=False)
def chain():
    x = start()
    for i in range(9):
        x = inc(x, id=f"inc_{i}")


if __name__ == "__main__":
    chain()
