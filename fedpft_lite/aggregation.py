"""FedAvg of trainable states (LoRA + head).

``weighted`` (default, McMahan et al. 2017): client k's state counts n_k / sum(n) where n_k is
its number of training examples. ``uniform``: a plain mean. They differ under non-IID data,
where client sizes differ; the paper does not say which it used, so it is a config choice.
"""
from __future__ import annotations

from collections import OrderedDict

import torch

from .catalog import AGGREGATIONS  # noqa: F401 (defined there, with every other name)


def fedavg(states: list[dict], num_examples: list[int] | None = None,
           mode: str = "weighted") -> "OrderedDict[str, torch.Tensor]":
    """Average a list of states with identical keys and shapes."""
    if not states:
        raise ValueError("fedavg needs at least one client state")
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {mode!r}; use one of {AGGREGATIONS}")
    keys = list(states[0])
    for s in states[1:]:
        if list(s) != keys:
            raise KeyError("client states have different keys; were they trained on the same proxy?")
    if mode == "weighted":
        if num_examples is None or len(num_examples) != len(states):
            raise ValueError("weighted FedAvg needs one example count per state")
        total = float(sum(num_examples))
        if total <= 0:
            raise ValueError("example counts must sum to a positive number")
        w = [n / total for n in num_examples]
    else:
        w = [1.0 / len(states)] * len(states)
    out = OrderedDict()
    for k in keys:
        acc = torch.zeros_like(states[0][k], dtype=torch.float64)
        for wi, s in zip(w, states):
            acc += wi * s[k].double()
        out[k] = acc.to(states[0][k].dtype)
    return out
