"""Is a difference between two methods signal or seed noise? Means and 95 % intervals over seeds.

A federated run's accuracy moves by a point or more with its seed (which clients are sampled,
how data is split, how LoRA and the head start). So every comparison in this project is
reported the same way:

* each method: the mean over seeds and a 95 % confidence interval, ``mean ± t_{0.975, n-1} · s/√n``
  (Student's t, because we have 2 to 5 seeds, not 30);
* each pair of methods: the **same-seed difference**. Runs of one seed share the clients'
  data, the sampling and the test set, so a - b per seed removes most of that noise; its mean
  and t-interval say whether the gap is real. When the interval holds 0 the two are **not
  distinguishable** at this number of seeds, and we say so in words.

With one seed there is no interval (``nan``) and nothing is called distinguishable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95


def t_quantile(n: int, level: float = LEVEL) -> float:
    """Student's t quantile for a two-sided ``level`` interval from ``n`` values (n - 1 dof)."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, n - 1)) if n >= 2 else math.nan


@dataclass(frozen=True)
class Interval:
    """A mean over seeds with its two-sided confidence interval (half-width ``half``)."""
    mean: float
    half: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (needs >= 2 values)."""
        return self.n >= 2 and not math.isnan(self.half) and (self.low > 0 or self.high < 0)

    def __str__(self) -> str:
        return fmt_interval(self)


def mean_interval(values, level: float = LEVEL) -> Interval:
    """Mean and t-interval of ``values`` (NaNs dropped). One value: half-width ``nan``."""
    v = np.asarray([x for x in values if x is not None and not np.isnan(x)], dtype=float)
    if len(v) == 0:
        return Interval(math.nan, math.nan, 0)
    if len(v) == 1:
        return Interval(float(v[0]), math.nan, 1)
    return Interval(float(v.mean()), t_quantile(len(v), level) * float(v.std(ddof=1)) / math.sqrt(len(v)),
                    len(v))


def paired_difference(a: dict, b: dict, level: float = LEVEL) -> Interval:
    """Interval of a - b over the seeds both have (``a``, ``b``: seed -> value)."""
    common = sorted(set(a) & set(b))
    return mean_interval([a[s] - b[s] for s in common], level)


def verdict(diff: Interval, a: str = "a", b: str = "b") -> str:
    """Words for a same-seed difference a - b: who is better, or "not distinguishable"."""
    if diff.n < 2:
        return f"{a} vs {b}: one seed, no interval (not distinguishable)"
    if not diff.excludes_zero:
        return f"{a} and {b} are not distinguishable"
    return f"{a} is better than {b}" if diff.mean > 0 else f"{b} is better than {a}"


def fmt_interval(iv: Interval, digits: int = 2, signed: bool = False) -> str:
    """``82.31 ± 0.84`` (or ``+1.20 ± 0.50`` with ``signed``); ``82.31`` alone for one value."""
    sign = "+" if signed else ""
    if math.isnan(iv.mean):
        return "–"
    if math.isnan(iv.half):
        return f"{iv.mean:{sign}.{digits}f}"
    return f"{iv.mean:{sign}.{digits}f} ± {iv.half:.{digits}f}"


def describe_difference(diff: Interval, a: str, b: str, unit: str = "points", digits: int = 2) -> str:
    """One sentence for a same-seed difference, computed from the numbers (for notebooks, the demo
    and the README): "FedPFT − FedOT = +2.10 points (95 % CI +0.80 to +3.40, 3 seeds): FedPFT is
    better than FedOT"."""
    if diff.n == 0:
        return f"{a} − {b}: no common seeds"
    if diff.n == 1:
        return (f"{a} − {b} = {diff.mean:+.{digits}f} {unit} (1 seed, no interval): "
                "not distinguishable without more seeds")
    return (f"{a} − {b} = {diff.mean:+.{digits}f} {unit} (95 % CI {diff.low:+.{digits}f} to "
            f"{diff.high:+.{digits}f}, {diff.n} seeds): {verdict(diff, a, b)}")
