"""fedpft_lite/timing.py: the run's counts come from its config, and the calibration times the
model without changing it. (What a number of seconds is depends on the machine: no test asserts one.)"""
import math

import torch

from fedpft_lite.config import FedConfig
from fedpft_lite.data import encode, load_task, make_loader
from fedpft_lite.lora import add_lora
from fedpft_lite.models import load_foundation_model
from fedpft_lite.timing import calibrate, expected_seconds, run_counts, say_minutes


def test_run_counts_follow_the_schedule():
    cfg = FedConfig(method="fedpft", max_train=320, max_test=130, num_clients=4, fraction=0.5, rounds=5,
                    batch_size=16, local_epochs=2, align_before_steps=30, align_steps=7, align_every=2,
                    eval_every=2, eval_batch_size=64, eval_proxy="final")
    n = run_counts(cfg)
    # 320 / 4 = 80 examples per client: 5 batches of 16, 2 epochs; 2 clients a round, 5 rounds
    assert n["client_steps"] == 5 * 2 * 10
    # alignment in rounds 2 and 4 (t = 2, never the last round), 7 steps each, after 30 before FL
    assert n["distil_steps"] == 30 + 2 * 7
    # evaluated after rounds 2, 4 and 5 (the last): 3 x ceil(130 / 64) batches, FM only
    assert n["eval_batches"] == 3 * 3
    assert run_counts(cfg.replace(eval_proxy="every"))["eval_batches"] == 2 * 3 * 3
    assert run_counts(cfg.replace(method="fedpetuning"))["distil_steps"] == 0


def test_an_uncapped_run_is_counted_from_the_tasks_own_split_sizes():
    # the vision experiments use whole splits (max_train=None): notebook 07's full setting
    cfg = FedConfig(method="fedpetuning", task="digits", model="vit-tiny-fmnist", max_train=None, max_test=None,
                    num_clients=10, fraction=0.5, rounds=2, batch_size=16, eval_every=1, eval_proxy="final")
    ds = load_task("digits")
    per_client = math.ceil(len(ds["train"]) / 10 / 16)
    assert run_counts(cfg)["client_steps"] == 2 * 5 * per_client
    assert run_counts(cfg)["eval_batches"] == 2 * math.ceil(len(ds["test"]) / 64)


def test_calibration_leaves_the_model_as_it_was(tiny_model):
    model, tok = load_foundation_model(tiny_model, num_labels=5)
    model = add_lora(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = make_loader(encode(load_task("bbc-news", max_train=8, max_test=8)["test"], tok, 32), tok, 8)
    cost = calibrate(model, loader, batch_size=4, eval_batch_size=16)
    assert cost["step"] > 0 and cost["eval_batch"] > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    cfg = FedConfig(model=tiny_model, task="bbc-news", max_train=32, max_test=16, num_clients=2, rounds=2)
    assert expected_seconds(cfg, model, loader) > 0


def test_say_minutes():
    assert say_minutes(40.2) == "about 40 s"
    assert say_minutes(210) == "about 3.5 min"
