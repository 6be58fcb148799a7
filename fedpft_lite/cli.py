"""The command line: ``fedpft-lite COMMAND`` or ``python -m fedpft_lite COMMAND``.

Commands:
  info        what is installed, which device would be used, the tasks and models known
  probe       frozen-FM linear probe on a task (how hard the task is without fine-tuning)
  partition   print (and plot) how a task's training set splits among clients
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="minilm", help="hub id, local folder, or 'minilm' (offline default)")
    p.add_argument("--task", default="bbc-news", help="bbc-news, digits, mnist-5k, sst2, qnli, ... or a file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps")


def cmd_info(args) -> int:
    import torch
    import transformers, datasets, peft  # noqa: E401

    from . import __version__
    from .data import HUB_TASKS, OFFLINE_TASKS
    from .models import OFFLINE_MODELS
    from .utils import hub_reachable, is_quick, pick_device

    print(f"fedpft_lite {__version__}: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"datasets {datasets.__version__}, peft {peft.__version__}")
    print(f"device (auto): {pick_device('auto')}   quick setting: {is_quick()}   hub reachable: {hub_reachable()}")
    print(f"offline models: {', '.join(f'{k} ({v})' for k, v in OFFLINE_MODELS.items())}")
    print(f"offline tasks: {', '.join(OFFLINE_TASKS)}   hub tasks: {', '.join(HUB_TASKS)}")
    return 0


def cmd_probe(args) -> int:
    import time

    from .data import encode, label_names, load_task, make_loader
    from .evaluation import linear_probe
    from .models import load_foundation_model
    from .utils import pick_device, seed_everything

    seed_everything(args.seed)
    device = pick_device(args.device)
    t0 = time.time()
    ds = load_task(args.task, max_train=args.max_train, max_test=args.max_test)
    names = label_names(ds)
    model, pre = load_foundation_model(args.model, num_labels=len(names), seed=args.seed)
    model.to(device)
    enc = encode(ds, pre, max_length=args.max_length)
    res = linear_probe(model, make_loader(enc["train"], pre, 64), make_loader(enc["test"], pre, 64),
                       device=device, seed=args.seed)
    res.update(model=args.model, task=args.task, seconds=round(time.time() - t0, 1))
    print(f"linear probe of frozen {args.model} on {args.task} ({len(names)} classes: {', '.join(names)})")
    print(f"  train {res['n_train']} / test {res['n_test']} examples: "
          f"test accuracy {100 * res['test_accuracy']:.2f} %  ({res['seconds']} s on {device})")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2))
        print(f"  written to {args.out}")
    return 0


def cmd_partition(args) -> int:
    from .data import label_names, load_task
    from .partition import partition, partition_summary, plot_partition

    ds = load_task(args.task)
    labels = ds["train"]["label"]
    parts = partition(labels, args.clients, args.scheme, alpha=args.alpha,
                      labels_per_client=args.labels_per_client, seed=args.seed)
    df = partition_summary(labels, parts, label_names(ds))
    print(df.to_string())
    print(f"mean label entropy: {df['entropy_bits'].mean():.3f} bits")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        ax = plot_partition(labels, parts, label_names(ds),
                            title=f"{args.task}: {args.scheme} over {args.clients} clients")
        ax.figure.savefig(args.plot, dpi=120, bbox_inches="tight")
        print(f"plot written to {args.plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedpft-lite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("info", help="environment, device, known tasks and models").set_defaults(func=cmd_info)

    p = sub.add_parser("probe", help="frozen-FM linear probe accuracy on a task")
    _add_common(p)
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--max-test", type=int, default=None)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--out", default=None, help="write the result as JSON here")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("partition", help="show how a task splits among clients")
    _add_common(p)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--scheme", default="dirichlet", choices=["iid", "dirichlet", "shards"])
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--labels-per-client", type=int, default=2)
    p.add_argument("--plot", default=None, help="save the label-mix plot (PNG) here")
    p.set_defaults(func=cmd_partition)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, NotImplementedError) as e:
        print(f"fedpft-lite: error: {e}", file=sys.stderr)
        return 2
