"""The command line: ``fedpft-lite COMMAND`` or ``python -m fedpft_lite COMMAND``.

Commands:
  info        what is installed, which device would be used, the tasks, models and model families known
  probe       frozen-FM linear probe on a task (how hard the task is without fine-tuning)
  partition   print (and plot) how a task's training set splits among clients
  demo        FedPETuning vs FedOT vs FedPFT on MiniLM + bbc-word-order (IID), table and plots
  run         one federated experiment from a config file and key=value overrides
  reproduce   the paper's experiments by name (--list), lite versions offline, tables vs the paper
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="minilm", help="hub id, local folder, or 'minilm' (offline default)")
    p.add_argument("--task", default="bbc-word-order",
                   help="bbc-word-order, bbc-news, digits, mnist-5k, sst2, qnli, ... or a file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps")


def _version(package: str) -> str:
    from importlib import metadata
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def cmd_info(args) -> int:
    from . import __version__

    # The first line from package metadata, before torch loads (seconds on a slow machine).
    print(f"fedpft_lite {__version__}: " + ", ".join(f"{p} {_version(p)}" for p in
                                                    ("torch", "transformers", "datasets", "peft")), flush=True)
    from .arch import supported_families
    from .catalog import HUB_TASKS, OBJECTIVES, OFFLINE_MODELS, OFFLINE_TASKS
    from .offline_models import describe
    from .utils import hub_reachable, is_quick, pick_device

    print(f"device (auto): {pick_device('auto')}   quick setting: {is_quick()}   hub reachable: {hub_reachable()}")
    print(f"offline models: {', '.join(f'{k} ({v})' for k, v in OFFLINE_MODELS.items())}")
    print(f"offline model mpnet (all-mpnet-base-v2): {describe()}")
    print(f"offline tasks: {', '.join(OFFLINE_TASKS)}   hub tasks: {', '.join(HUB_TASKS)}")
    print(f"objectives: {', '.join(OBJECTIVES)} (causal-lm: a decoder's next-token loss on the "
          "clients' text, scored by perplexity; --set objective=causal-lm)")
    families = supported_families()
    print(f"model families ({len(families)}, each tested end to end; table = "
          "fedpft_lite.arch.ARCHITECTURES, discovered = read from the module structure): "
          + ", ".join(f"{family} ({how})" for family, how in families.items()))
    return 0


def _check_sources(model: str | None, task: str) -> None:
    """A task that is neither known nor a readable file, or a hub model / task with no way to
    reach the hub: refused in milliseconds, before torch, transformers or datasets loads."""
    from .catalog import task_source_error
    from .utils import check_hub_needs

    if problem := task_source_error(task):
        raise ValueError(problem)
    check_hub_needs(model or "minilm", task)


def cmd_probe(args) -> int:
    _check_sources(args.model, args.task)
    import time

    from .data import label_names, load_task
    from .evaluation import frozen_baselines
    from .models import load_foundation_model
    from .utils import pick_device, seed_everything

    seed_everything(args.seed)
    device = pick_device(args.device)
    t0 = time.time()
    ds = load_task(args.task, max_train=args.max_train, max_test=args.max_test)
    names = label_names(ds)
    model, pre = load_foundation_model(args.model, num_labels=len(names), seed=args.seed)
    model.to(device)
    res = frozen_baselines(model, pre, ds, device, max_length=args.max_length, seed=args.seed)
    res.update(model=args.model, task=args.task, seconds=round(time.time() - t0, 1))
    print(f"frozen {args.model} on {args.task} ({len(names)} classes: {', '.join(names)}): "
          f"{res['n_train']} train / {res['n_val']} validation / {res['n_test']} test examples")
    for name, p in res["probes"].items():
        print(f"  linear probe, {name:20s} validation {100 * p['val_accuracy']:.2f} %  "
              f"test {100 * p['test_accuracy']:.2f} %  (weight decay {p['weight_decay']:g}, chosen on validation)")
    print(f"  the strongest frozen baseline (best on validation): {res['best']}, "
          f"test accuracy {100 * res['test_accuracy']:.2f} %  ({res['seconds']} s on {device})")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2))
        print(f"  written to {args.out}")
    return 0


def cmd_partition(args) -> int:
    _check_sources(None, args.task)
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

    sub.add_parser("info", help="environment, device, known tasks, models and model families").set_defaults(func=cmd_info)

    p = sub.add_parser("probe", help="the strongest frozen-feature baseline (linear probes) on a task")
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
    _add_run_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, KeyError, NotImplementedError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e  # KeyError's str() adds quotes
        print(f"fedpft-lite: error: {msg}", file=sys.stderr)
        return 2


# -- federated runs --------------------------------------------------------------------------------
# The main job: the three methods on the default task (bbc-word-order), IID clients, one seed, at
# the size in experiments.DEMO_SETTINGS (chosen on the validation split by
# scripts/choose_demo_size.py; 4.6 min on the slow 2-core machine, README). It is also the
# registered experiment lite/demo, so `fedpft-lite reproduce lite/demo` runs the same configs.
from .experiments import DEMO_SETTINGS  # noqa: E402 (light: config and catalog only; defined there)

QUICK_DEMO = dict(max_train=160, max_test=100, max_public=96, num_clients=4, fraction=0.5, rounds=2,
                  local_epochs=1, align_before_steps=4, align_steps=2, align_every=1, eval_every=1)
DEMO_NAMES = {"fedpetuning": "FedPETuning", "fedot": "FedOT", "fedpft": "FedPFT"}


def _results_table(results: dict) -> str:
    lines = ["| method | FM accuracy % | proxy accuracy % | MiB down / round | MiB up / round | seconds |",
             "|---|---|---|---|---|---|"]
    for name, h in results.items():
        mean = lambda k: sum(r[k] for r in h) / len(h) / 2**20  # noqa: E731
        proxy = h.final("proxy_accuracy")
        lines.append(f"| {name} | {100 * h.final('fm_accuracy'):.2f} | "
                     f"{'-' if proxy is None else f'{100 * proxy:.2f}'} | {mean('bytes_down'):.2f} | "
                     f"{mean('bytes_up'):.2f} | {sum(r['seconds'] for r in h):.0f} |")
    return "\n".join(lines)


def _committed_comparison(name: str = "lite/table1") -> str:
    """What the committed multi-seed table says (intervals and verdicts), or where to find it."""
    from .results import committed_summary, describe_comparisons

    summary = committed_summary(name)
    if summary is None:
        return (f"One seed gives no interval. The committed multi-seed {name} (README, 'Reproduction') "
                f"has them; `fedpft-lite reproduce {name}` recomputes it.")
    sentences = describe_comparisons(name, summary)
    if not sentences:
        return f"One seed gives no interval, and the committed {name} has no finished comparison yet."
    seeds = summary["seed"].nunique()
    lines = [f"One seed gives no interval. The committed {name} ({seeds} seeds, same task and model, "
             "larger scale; same-seed differences, 95 % intervals):"]
    lines += [f"  - {s}" for s in sentences]
    gap = committed_summary(f"{name}-gap")           # the same two cells with more seeds, if committed
    if gap is not None:
        lines += [f"  - with {gap['seed'].nunique()} seeds ({name}-gap): {s}"
                  for s in describe_comparisons(f"{name}-gap", gap)]
    return "\n".join(lines)


#: How ``run``'s errors name its options (``fedpft_lite.run_folder.check_output_dir``).
RUN_OPTIONS = {"resume": "--resume", "overwrite": "--overwrite"}


def demo_plan(configs: dict, overwrite: bool) -> dict:
    """What the demo does with each method's folder: ``"new"`` (nothing there, or --overwrite),
    ``"resume"`` (an interrupted demo with these settings: continue from its checkpoint) or
    ``"reuse"`` (a finished one with these settings: show it again). A folder holding a run with
    other settings is refused, naming the settings and the options that resolve it (before any
    model loads)."""
    from .run_folder import checkpoint_file, config_differences, finished

    todo = {}
    for m, cfg in configs.items():
        out = Path(cfg.output_dir)
        if overwrite or not (finished(out) or checkpoint_file(out).exists()):
            todo[m] = "new"
            continue
        kind = "reuse" if finished(out) else "resume"
        saved = json.loads((out / "results.json" if kind == "reuse" else checkpoint_file(out)).read_text())
        diff = config_differences(saved["config"], cfg)
        if diff:
            raise FileExistsError(f"{out} holds a {DEMO_NAMES[m]} run with other settings (they differ in "
                                  f"{diff}): pass --overwrite to replace it, or --out to use another folder")
        todo[m] = kind
    return todo


def demo_estimate(base, configs: list) -> str:
    """The demo's expected time before it starts: two training steps of the FM with LoRA (an upper
    bound on every method's proxy) timed on this machine, times each run's steps
    (:func:`fedpft_lite.timing.expected_seconds`)."""
    from .data import encode, load_task, make_loader
    from .lora import LoraSettings, add_lora
    from .models import load_foundation_model
    from .timing import expected_seconds, say_minutes
    from .utils import pick_device

    fm, tokenizer = load_foundation_model(base.model, num_labels=2)
    fm = add_lora(fm.to(pick_device(base.device)),
                  LoraSettings(r=base.lora_r, alpha=base.lora_alpha, dropout=base.lora_dropout))
    sample = load_task(base.task, max_train=base.batch_size, max_test=base.batch_size)["test"]
    loader = make_loader(encode(sample, tokenizer, base.max_length), tokenizer, base.batch_size)
    return say_minutes(sum(expected_seconds(cfg, fm, loader) for cfg in configs))


def cmd_demo(args) -> int:
    import time

    from .config import FedConfig
    from .utils import is_quick

    quick = args.quick or is_quick()
    settings = dict(DEMO_SETTINGS, **(QUICK_DEMO if quick else {}))
    out = Path(args.out)
    base = FedConfig(**settings, seed=args.seed, device=args.device, overwrite=args.overwrite)
    configs = {m: base.replace(method=m, output_dir=str(out / m)).validate().resolved() for m in DEMO_NAMES}
    todo = demo_plan(configs, args.overwrite)   # every folder checked before any work
    print(f"fedpft-lite demo: {base.model} on {base.task}, {base.num_clients} {base.partition.upper()} "
          f"clients, {base.clients_per_round} per round, {base.rounds} rounds of {base.local_epochs} local "
          f"epochs, {base.max_train} training / {base.max_test} test sentences, seed {base.seed}", flush=True)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .federated import run_federated
    from .history import History, plot_bytes, plot_histories

    t0 = time.time()
    to_run = [cfg for m, cfg in configs.items() if todo[m] != "reuse"]
    if to_run:
        print(f"expected: {demo_estimate(base, to_run)} on this machine (calibrated: the FM's training steps "
              f"timed here, times the runs' steps; the proxies are smaller, so this is an upper bound)",
              flush=True)
    results = {}
    for m, cfg in configs.items():
        if todo[m] == "reuse":
            print(f"{DEMO_NAMES[m]}: finished earlier with these settings, shown again from {cfg.output_dir}")
            results[DEMO_NAMES[m]] = History.load(cfg.output_dir)
            continue
        if todo[m] == "resume":
            print(f"{DEMO_NAMES[m]}: an interrupted run with these settings, continued from its checkpoint")
        results[DEMO_NAMES[m]] = run_federated(cfg.replace(resume=todo[m] == "resume"),
                                               progress=not args.no_progress)
    table = _results_table(results)
    acc = {m: h.final("fm_accuracy") for m, h in results.items()}
    order = " > ".join(f"{m} ({100 * a:.1f})" for m, a in sorted(acc.items(), key=lambda kv: -kv[1]))
    if quick:
        order += " (quick setting: far too small to rank the methods)"
    note = _committed_comparison()
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(f"{table}\n\nThis run (seed {base.seed}): {order}.\n\n{note}\n")
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.5))
    plot_histories(results, "train_loss", ax=axes[0], title="clients' mean training loss per round")
    names = list(results)
    axes[1].bar(names, [100 * acc[m] for m in names], color=["C0", "C1", "C2"])
    axes[1].axhline(50, color="grey", ls=":", lw=1)
    axes[1].text(-0.4, 51, "chance", color="grey", fontsize=8, ha="left", va="bottom")
    axes[1].set_ylim(0, 100)
    axes[1].set_ylabel("FM test accuracy % (plugged-in state)")
    axes[1].set_title(f"after round {base.rounds}, seed {base.seed}")
    plot_bytes(results, ax=axes[2])
    fig.tight_layout()
    fig.savefig(out / "demo.png", dpi=120)
    print(table)
    print(f"\nThis run (seed {base.seed}): {order}.\n{note}")
    print(f"\n{time.time() - t0:.0f} s in all. Histories, results and plots are in {out.resolve()}/")
    return 0


def cmd_run(args) -> int:
    from .config import FedConfig
    from .run_folder import check_output_dir
    from .utils import check_hub_needs

    cfg = FedConfig.from_file(args.config) if args.config else FedConfig()
    cfg = cfg.with_overrides(args.set or [])
    if args.output_dir:
        cfg = cfg.replace(output_dir=args.output_dir)
    if args.resume:
        cfg = cfg.replace(resume=True)
    if args.overwrite:
        cfg = cfg.replace(overwrite=True)
    check_output_dir(cfg.validate().resolved(), RUN_OPTIONS)   # milliseconds: nothing heavy loaded yet
    check_hub_needs(cfg.model, cfg.task)
    from .federated import run_federated

    h = run_federated(cfg, progress=not args.no_progress)
    print(h.to_frame().drop(columns=["clients"], errors="ignore").to_string())
    if cfg.objective == "causal-lm":
        print(f"final full-FM test perplexity: {h.final('fm_perplexity'):.2f} (next-token accuracy "
              f"{100 * h.final('fm_accuracy'):.2f} %)")
    else:
        print(f"final full-FM accuracy: {100 * h.final('fm_accuracy'):.2f} %")
    if cfg.output_dir:
        print(f"history and results in {Path(cfg.output_dir).resolve()}/")
    return 0


def cmd_reproduce(args) -> int:
    from .experiments import get_experiment, list_experiments
    from .utils import is_quick

    if args.list or not args.name:
        for scale in ("lite", "paper"):
            print(f"{scale} experiments ({'offline, CPU' if scale == 'lite' else 'hub + GPU'}):")
            for e in list_experiments(scale):
                print(f"  {e.name:34s} {len(e.cells):2d} cells x {len(e.seeds)} seeds  {e.description}")
        if not args.list:
            print("\nname one: fedpft-lite reproduce lite/table1")
        return 0
    exp = get_experiment(args.name)          # an unknown name fails here, before pandas or torch
    from .reproduce import load_summary, plan, reproduce
    from .results import METRIC_NAMES, comparison_table, describe_comparisons, extra_seed_note, to_markdown

    quick = args.quick or is_quick()
    if args.table_only:
        summary = load_summary(exp.name, args.root, quick)
    else:
        plan(exp, args.seeds, quick, args.device, args.cells)   # every config checked first
        if exp.scale == "paper":
            print("assumptions of the paper-scale settings:\n  - " + "\n  - ".join(exp.notes))
        summary = reproduce(exp, args.root, seeds=args.seeds, quick=quick, device=args.device,
                            cells=args.cells, allow_cpu=args.allow_cpu, progress=not args.no_progress, verbose=True,
                            command="fedpft-lite " + " ".join(sys.argv[1:]))
    print(f"\n{exp.description} ({', '.join(exp.notes) if exp.scale == 'lite' else exp.needs})")
    if exp.metric != "fm_accuracy":     # the table below is not a test result: say so
        print(f"accuracies on the {METRIC_NAMES[exp.metric]} split ({exp.metric}), where settings are chosen")
    if note := extra_seed_note(exp, summary):
        print(note)
    print(to_markdown(comparison_table(exp, summary)))
    for sentence in describe_comparisons(exp, summary):   # same-seed differences, in words
        print(f"  - {sentence}")
    return 0


def _add_run_parsers(sub) -> None:
    p = sub.add_parser("demo", help="FedPETuning vs FedOT vs FedPFT on the offline default (minutes on a CPU)")
    p.add_argument("--out", default="outputs/demo", help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="a tiny run (also when FEDPFT_LITE_QUICK is set)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over, replacing the runs in --out (by default an interrupted demo "
                        "continues and a finished one is shown again)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="one federated experiment from a YAML/JSON config and key=value overrides")
    p.add_argument("--config", default=None, help="YAML or JSON file with FedConfig fields")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="overrides, e.g. method=fedot rounds=5")
    p.add_argument("--output-dir", default=None)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --output-dir")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run's results")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("reproduce", help="the paper's experiments by name; --list shows them all")
    p.add_argument("name", nargs="?", help="e.g. lite/table1 or paper/table1/bert-base/sst2")
    p.add_argument("--list", action="store_true", help="list every registered experiment")
    p.add_argument("--root", default="outputs/reproduce", help="results folder (runs are reused from it)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the experiment's seeds")
    p.add_argument("--cells", nargs="+", default=None, help="run only these cells (labels as listed)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="seconds-long version (also when FEDPFT_LITE_QUICK is set)")
    p.add_argument("--allow-cpu", action="store_true", help="run a paper-scale experiment without a GPU")
    p.add_argument("--table-only", action="store_true", help="print the table from results already in --root")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_reproduce)
