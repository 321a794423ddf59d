# A ZenML-style fan-out: one step, eight beside each other, one joining them (10 steps).
from ferry import pipeline, step


@step
def source() -> int:
    return 1


@step
def work(x: int) -> int:
    return x * 2


@step
def join(a: int, b: int, c: int, d: int, e: int, f: int, g: int, h: int) -> int:
    return a + b + c + d + e + f + g + h


@pipeline(enable_cache=False)
def fanout():
    s = source()
    parts = [work(s, id=f"work_{i}") for i in range(8)]
    join(*parts)


if __name__ == "__main__":
    fanout()
