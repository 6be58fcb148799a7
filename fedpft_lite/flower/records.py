"""What the messages carry, as Flower records, and back.

Tensors travel as ``ArrayRecord``s (NumPy ``.npy`` bytes: exact, so a state that goes out and
comes back is bit-identical). :func:`wire_bytes` is what a record costs on the wire: the arrays'
bytes, their ``.npy`` headers and key names (``ArrayRecord.count_bytes``).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import torch
from flwr.app import ArrayRecord

from ..models import META_FILE, WEIGHTS_FILE


def state_record(state: dict) -> ArrayRecord:
    """A trainable state (or FFN patch) as an ArrayRecord, keys in order."""
    return ArrayRecord(OrderedDict((k, v.detach().cpu().contiguous()) for k, v in state.items()))


def record_state(record: ArrayRecord) -> "OrderedDict[str, torch.Tensor]":
    return record.to_torch_state_dict()


def stats_record(stats: dict) -> ArrayRecord:
    """Activation statistics -> per layer near-zero counts (int32: what the history counts as
    4 bytes per neuron). ``abs_sum`` stays on the client: the server's APoZ does not use it."""
    out = OrderedDict()
    for layer, zeros in stats["zeros"].items():
        if zeros.max() >= 2**31:
            raise OverflowError("activation counts exceed int32")
        out[f"zeros.{layer}"] = zeros.to(torch.int32)
    return ArrayRecord(out)


def record_stats(record: ArrayRecord, tokens: int, nbytes: int) -> dict:
    """The server's view of one client's statistics, as ``alignment.aggregate_apoz`` reads it."""
    zeros = {int(k.split(".", 1)[1]): v.to(torch.float64) for k, v in record.to_torch_state_dict().items()}
    return {"zeros": zeros, "tokens": int(tokens), "bytes": int(nbytes)}


def wire_bytes(*records) -> int:
    """Bytes the ArrayRecords occupy in a message (arrays + .npy headers + key names)."""
    return int(sum(r.count_bytes() for r in records if r is not None))


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def proxy_files_bytes(folder: str | Path) -> int:
    """Bytes of a published proxy folder (weights, config, tokenizer): shipped once."""
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())


__all__ = ["state_record", "record_state", "stats_record", "record_stats", "wire_bytes",
           "file_sha256", "proxy_files_bytes", "META_FILE", "WEIGHTS_FILE"]
