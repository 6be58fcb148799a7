"""Our numbers beside the paper's: means with 95 % intervals over seeds, same-seed gaps to a
reference cell with their intervals and a verdict in words (:mod:`fedpft_lite.stats`), and the
paper's value for the same cell read from ``paper_results.csv`` (transcribed once, with source).

    >>> from fedpft_lite.results import comparison_table, to_markdown
    >>> df = comparison_table("lite/table1", summary)      # summary: reproduce()'s DataFrame
    >>> print(to_markdown(df))
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .experiments import Experiment, get_experiment
from .reproduce import read_summary
from .stats import Interval, describe_difference, mean_interval, paired_difference

PAPER_RESULTS = Path(__file__).with_name("paper_results.csv")
#: Where a wheel installs the repository's ``data/results`` (its small files; see setup.py).
INSTALLED_RESULTS = Path("share") / "fedpft_lite" / "results"


def results_root() -> Path:
    """The committed results folder (``data/results`` layout: ``reproduce/lite/<experiment>/``,
    ``archive/``, ``probe_*.json``). A checkout of the repository (``pip install -e .`` or running
    from the source tree) uses its own ``data/results``; an installed wheel (``pip install .``, Colab)
    the copy it installed under ``<prefix>/share/fedpft_lite/results``, located through the wheel's
    file list (so any install scheme works: venv, --user, /usr/local). Without either, the checkout
    path, which then does not exist (callers report "not available")."""
    checkout = Path(__file__).resolve().parents[1] / "data" / "results"
    if checkout.is_dir():
        return checkout
    try:
        from importlib.metadata import PackageNotFoundError, distribution
        dist = distribution("fedpft-lite")
        marker = INSTALLED_RESULTS.as_posix() + "/"
        for f in dist.files or ():
            posix = Path(f).as_posix()
            if marker in posix:       # e.g. ../../../share/fedpft_lite/results/probe_x.json
                return Path(dist.locate_file(posix[:posix.index(marker) + len(marker) - 1])).resolve()
    except PackageNotFoundError:
        pass
    import sysconfig
    installed = Path(sysconfig.get_path("data")) / INSTALLED_RESULTS
    return installed if installed.is_dir() else checkout


#: The committed lite results: ``<results_root()>/reproduce`` (``<name>/summary.csv``, ``meta.json``).
COMMITTED_ROOT = results_root() / "reproduce"


def committed_summary(name: str, seeds: str = "registered") -> pd.DataFrame | None:
    """The committed summary of a lite experiment (``<COMMITTED_ROOT>/<name>/summary.csv``, from the
    checkout or the installed wheel), or None where it has not been committed (yet). Only the
    seeds its registry entry names unless ``seeds`` is ``"all"`` or ``"extra"``: every reader then
    sees the pre-registered runs, and seeds added later only when asking for them."""
    path = COMMITTED_ROOT / name / "summary.csv"
    if not path.exists():
        return None
    summary = read_summary(path)
    return _rows_of(get_experiment(name), summary, seeds).reset_index(drop=True)


def paper_results() -> pd.DataFrame:
    """The paper's accuracies (%) as a DataFrame: table, model, task, setting, method, accuracy, source."""
    return pd.read_csv(PAPER_RESULTS, comment="#")


def paper_value(table: str, model: str, task: str, method: str, setting: str = "iid",
                paper: pd.DataFrame | None = None) -> float | None:
    p = paper_results() if paper is None else paper
    hit = p[(p.table == table) & (p.model == model) & (p.task == task) & (p.method == method)
            & (p.setting == setting)]
    if len(hit) > 1:
        raise ValueError(f"paper_results.csv has {len(hit)} rows for {table}/{model}/{task}/{method}/{setting}")
    return float(hit.accuracy.iloc[0]) if len(hit) else None


def seed_statistics(summary: pd.DataFrame, metric: str = "fm_accuracy") -> pd.DataFrame:
    """Per cell: mean over seeds in %, the half-width of its 95 % t-interval, and the seed count."""
    rows = {}
    for cell, g in summary.groupby("cell", sort=False):
        iv = mean_interval(100 * g[metric].to_numpy(dtype=float))
        rows[cell] = {"ours %": iv.mean, "95% CI ±": iv.half, "seeds": iv.n}
    return pd.DataFrame.from_dict(rows, orient="index")


def same_seed_gaps(summary: pd.DataFrame, reference: str, metric: str = "fm_accuracy") -> pd.DataFrame:
    """Per seed (rows) and cell (columns): the cell's metric minus the reference cell's, in points.
    Cells of one seed share clients, sampling and test set, so these differences are less noisy
    than either accuracy."""
    wide = summary.pivot_table(index="seed", columns="cell", values=metric) * 100
    return wide.sub(wide[reference], axis=0)


def paired(summary: pd.DataFrame, a: str, b: str, metric: str = "fm_accuracy") -> Interval:
    """The same-seed difference a - b (points) with its 95 % interval, over the seeds both ran."""
    wide = summary.pivot_table(index="seed", columns="cell", values=metric) * 100
    for c in (a, b):
        if c not in wide:
            raise KeyError(f"no results for cell {c!r}; cells: {list(wide.columns)}")
    return paired_difference(wide[a].dropna().to_dict(), wide[b].dropna().to_dict())


#: Summary columns set beside accuracy by :func:`cost_table`: (column, header, divisor).
COSTS = (("mib_down_per_round", "MiB down / round", 1), ("mib_up_per_round", "MiB up / round", 1),
         ("client_params", "client params (M)", 1e6), ("sent_params", "sent params (k)", 1e3),
         ("seconds_per_round", "s / round", 1), ("setup_seconds", "setup s", 1))


def cost_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per cell, the mean over its seeds of what a run costs: MiB down and up per round (all
    sampled clients together), the parameters of the proxy a client holds (millions, without
    LoRA), the values one client sends per round (thousands: LoRA + head), seconds per round and
    the server's seconds before round 1. A column the summary lacks (written before it existed)
    or holds no value for is NaN, printed "–"."""
    out = pd.DataFrame(index=pd.Index(list(dict.fromkeys(summary["cell"]))))
    for col, header, scale in COSTS:
        values = summary[col] if col in summary else pd.Series(np.nan, index=summary.index)
        out[header] = pd.to_numeric(values, errors="coerce").groupby(summary["cell"]).mean() / scale
    return out


# -- pre-registration: verdicts use the seeds the registry named before the runs ----------------
def _rows_of(exp: Experiment, summary: pd.DataFrame, seeds: str = "registered") -> pd.DataFrame:
    """The experiment's rows of ``summary``: with ``seeds="registered"`` (the default everywhere)
    only the seeds its registry entry names (``Experiment.seeds``, fixed before its runs start);
    ``"extra"`` the others (seeds added later, e.g. after looking at the registered ones);
    ``"all"`` both."""
    if seeds not in ("registered", "extra", "all"):
        raise ValueError(f"seeds must be 'registered', 'extra' or 'all', got {seeds!r}")
    summary = summary[summary.experiment == exp.name] if "experiment" in summary else summary
    if seeds == "all":
        return summary
    named = summary["seed"].isin(exp.seeds)
    return summary[named if seeds == "registered" else ~named]


def extra_seeds(exp: str | Experiment, summary: pd.DataFrame) -> list[int]:
    """Seeds in ``summary`` that the registry did not name for ``exp``."""
    exp = get_experiment(exp) if isinstance(exp, str) else exp
    return sorted(int(s) for s in set(_rows_of(exp, summary, "extra")["seed"]))


def extra_seed_note(exp: str | Experiment, summary: pd.DataFrame,
                    metric: str | None = None) -> str | None:
    """None when ``summary`` holds only registered seeds; else a paragraph that says which seeds
    the registry did not name, that the table and verdicts leave them out, and what the
    comparisons would be with them included (reported apart, never folded into the verdict)."""
    exp = get_experiment(exp) if isinstance(exp, str) else exp
    metric = metric or exp.metric
    extra = extra_seeds(exp, summary)
    if not extra:
        return None
    lines = [f"Note: the summary also holds seed(s) {extra}, which the registry did not name for "
             f"{exp.name} (registered: {list(exp.seeds)}; seeds added after looking). The table and "
             "verdicts use the registered seeds only; with the extra seeds included, reported apart:"]
    lines += [f"  - {s}" for s in describe_comparisons(exp, summary, metric, seeds="all")]
    return "\n".join(lines)


def comparison_table(experiment: str | Experiment, summary: pd.DataFrame,
                     metric: str | None = None, seeds: str = "registered") -> pd.DataFrame:
    """One row per cell: our mean over seeds with its 95 % interval; the same-seed difference to
    the reference cell with its interval and a verdict in words ("better", "worse", "not
    distinguishable"); the paper's value and gap for each of the experiment's paper columns; and,
    for an experiment with ``costs``, :func:`cost_table` beside them. Only the registered seeds
    count unless ``seeds`` says otherwise (:func:`extra_seed_note` reports the rest apart).
    ``metric`` defaults to the experiment's own (``Experiment.metric``: test, or validation for
    the experiments that choose or explain a setting)."""
    exp = get_experiment(experiment) if isinstance(experiment, str) else experiment
    metric = metric or exp.metric
    summary = _rows_of(exp, summary, seeds)
    if summary.empty:
        raise ValueError(f"the summary holds no rows of {exp.name}")
    order = [c.label for c in exp.cells if c.label in set(summary.cell)]
    df = seed_statistics(summary, metric).reindex(order)
    ref = exp.reference
    if ref and ref in df.index:
        diffs = {c: paired(summary, c, ref, metric) for c in order}
        df[f"Δ vs {ref}"] = [diffs[c].mean for c in order]
        df["Δ 95% CI ±"] = [diffs[c].half for c in order]
        df["Δ verdict"] = ["reference" if c == ref else f"same runs as {ref}" if _same_runs(summary, c, ref)
                           else _word(diffs[c]) for c in order]
    paper = paper_results()
    for label, table, model, task in exp.paper_columns:
        vals = {c.label: paper_value(table, model, task, c.paper_method, c.paper_setting, paper)
                for c in exp.cells if c.label in df.index and c.paper_method}
        df[label] = pd.Series(vals, dtype=float).reindex(order)
        if ref and ref in vals and vals[ref] is not None:
            df[f"{label} Δ"] = df[label] - vals[ref]
    if exp.costs:
        df = df.join(cost_table(summary))
    df.index.name = exp.name
    return df


def describe_comparisons(experiment: str | Experiment, summary: pd.DataFrame,
                         metric: str | None = None, seeds: str = "registered") -> list[str]:
    """One sentence per pair in the experiment's ``comparisons`` whose cells have results: the
    same-seed difference with its 95 % interval and whether the two are distinguishable (over
    the registered seeds unless ``seeds`` says otherwise)."""
    exp = get_experiment(experiment) if isinstance(experiment, str) else experiment
    metric = metric or exp.metric
    summary = _rows_of(exp, summary, seeds)
    have = set(summary.cell)
    return [describe_difference(paired(summary, a, b, metric), a, b)
            for a, b in exp.comparisons if a in have and b in have]


def _same_runs(summary: pd.DataFrame, a: str, b: str) -> bool:
    """Whether cells ``a`` and ``b`` are one set of runs (same config, same keys: e.g. the parameter
    study's p = 0.5 is its t = 2); their difference is 0 by construction, not a measurement."""
    if "run" not in summary:
        return False
    runs = [set(summary.loc[summary.cell == c, "run"].dropna()) for c in (a, b)]
    return bool(runs[0]) and runs[0] == runs[1]


def _word(diff: Interval) -> str:
    if not diff.excludes_zero:
        return "not distinguishable"
    return "better" if diff.mean > 0 else "worse"


def to_markdown(df: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub-flavoured markdown table (no optional dependency such as tabulate needed)."""
    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return "–" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v)
    cols = [df.index.name or ""] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, *row in df.itertuples():            # itertuples keeps each column's dtype (ints stay ints)
        lines.append("| " + " | ".join([str(idx)] + [fmt(v) for v in row]) + " |")
    return "\n".join(lines)


def ordering(df: pd.DataFrame, column: str = "ours %") -> list[str]:
    """Cells from best to worst by a column (for 'is the paper's ordering reproduced?')."""
    return list(df[column].sort_values(ascending=False).index)


# -- the README's results blocks (scripts/readme_results.py writes them, a test compares) ----------
#: How a results block names the metric it reports (README blocks: ``<!-- results NAME [METRIC] -->``).
METRIC_NAMES = {"fm_accuracy": "test", "fm_val_accuracy": "validation"}


def results_markdown(experiment: str | Experiment, summary: pd.DataFrame | None = None,
                     metric: str | None = None) -> str:
    """The Markdown block the README shows for one committed experiment, computed from its
    summary (default: the committed one): per cell the mean with its 95 % interval, the seed
    count and every seed's value; the paper's values; for an experiment with ``costs`` the MiB
    down per round and the parameters a client holds; then each comparison in words and, when the
    summary holds seeds the registry did not name, the note that reports them apart. The README
    carries these blocks verbatim (``tests/test_readme_results.py``), so its numbers are the data's.
    ``metric`` is the final full-FM accuracy on test or ``fm_val_accuracy`` (validation, where
    settings are chosen); by default the experiment's own; the table's first header says which."""
    exp = get_experiment(experiment) if isinstance(experiment, str) else experiment
    metric = metric or exp.metric
    if metric not in METRIC_NAMES:
        raise ValueError(f"metric must be one of {sorted(METRIC_NAMES)}, got {metric!r}")
    everything = committed_summary(exp.name, seeds="all") if summary is None else summary
    if everything is None:
        raise FileNotFoundError(f"no committed summary for {exp.name} under {COMMITTED_ROOT}")
    mine = _rows_of(exp, everything, "registered")
    stats = seed_statistics(mine, metric)
    order = [c.label for c in exp.cells if c.label in stats.index]
    header = [f"{exp.name} ({METRIC_NAMES[metric]})", "ours % (95 % CI)", "seeds", "per seed"]
    paper_labels = [label for label, *_ in exp.paper_columns]
    if paper_labels:
        parts = [label.removeprefix("paper ").split(" ", 1) for label in paper_labels]
        models = {m for m, _ in parts}
        header.append(f"paper {models.pop()}: " + " / ".join(t for _, t in parts) if len(models) == 1
                      else "paper: " + " / ".join(" ".join(p) for p in parts))
    costs = cost_table(mine) if exp.costs else None
    if costs is not None:
        header += ["MiB down / round", "client params (M)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    paper = paper_results()
    for label in order:
        cell = exp.cell(label)
        values = mine[mine.cell == label].sort_values("seed")[metric] * 100
        row = [label, f"{stats.loc[label, 'ours %']:.2f} ± {stats.loc[label, '95% CI ±']:.2f}",
               str(int(stats.loc[label, "seeds"])), ", ".join(f"{v:.2f}" for v in values)]
        if paper_labels:
            vals = [paper_value(t, m, task, cell.paper_method, cell.paper_setting, paper) if cell.paper_method
                    else None for _, t, m, task in exp.paper_columns]
            row.append(" / ".join("–" if v is None else f"{v:g}" for v in vals))
        if costs is not None:
            row += [f"{costs.loc[label, 'MiB down / round']:.2f}", f"{costs.loc[label, 'client params (M)']:.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    lines += [""] + [f"- {s}" for s in describe_comparisons(exp, mine, metric)]
    if note := extra_seed_note(exp, everything, metric):
        first, *rest = note.splitlines()
        lines += ["", first] + [line.replace("  - ", "- ", 1) for line in rest]
    return "\n".join(lines).rstrip() + "\n"
