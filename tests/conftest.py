"""Shared fixtures. (Environment settings live in the root conftest.py.)"""
from pathlib import Path

import pytest
import torch
import transformers

from fedpft_lite.models import FMClassifier, load_foundation_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A 4-layer random-init BERT saved with the real MiniLM tokenizer, loadable by path.

    Random weights are fine for mechanics (what changes, what stays, what runs when); accuracy
    claims are made on the real MiniLM elsewhere."""
    _, tok = load_foundation_model("minilm", num_labels=5)
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=4,
                                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    model = FMClassifier(transformers.AutoModel.from_config(cfg), num_labels=5, pooling="mean")
    folder = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(folder, preprocessor=tok)
    return str(folder)


@pytest.fixture
def one_thread():
    """Tiny matrices: a second thread costs more than it saves on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def task_identity(monkeypatch):
    """Flower 1.42 stamps a new Message with the sending task's ids, which only a running
    ServerApp has: give this test process some (restored afterwards)."""
    from flwr.supercore.task_identity import TaskIdentity
    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1, raising=False)


def committed_text(path: Path) -> str:
    """A file as git would commit it (the staged version, ``git show :path``), else as it is on disk.
    For the stored notebooks: CI executes them in place (nbmake --overwrite, to render the course
    site from those outputs), so during its run the files hold outputs that are never committed."""
    import subprocess
    path = Path(path)
    staged = subprocess.run(["git", "show", f":./{path.name}"], cwd=path.parent, capture_output=True, text=True)
    return staged.stdout if staged.returncode == 0 else path.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def committed():
    """:func:`committed_text`, for tests that read the stored notebooks' committed form."""
    return committed_text
