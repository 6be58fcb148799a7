"""Our numbers beside the paper's: mean and spread over seeds, gaps to a reference cell, and the
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

PAPER_RESULTS = Path(__file__).with_name("paper_results.csv")


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
    """Per cell: mean and sample standard deviation (ddof 1) over seeds, in %, and the seed count."""
    g = summary.groupby("cell", sort=False)[metric]
    return pd.DataFrame({"ours %": 100 * g.mean(), "± sd": 100 * g.std(ddof=1), "seeds": g.count()})


def same_seed_gaps(summary: pd.DataFrame, reference: str, metric: str = "fm_accuracy") -> pd.DataFrame:
    """Per seed (rows) and cell (columns): the cell's metric minus the reference cell's, in points.
    Cells of one seed share clients, sampling and test set, so these differences are less noisy
    than either accuracy."""
    wide = summary.pivot_table(index="seed", columns="cell", values=metric) * 100
    return wide.sub(wide[reference], axis=0)


def comparison_table(experiment: str | Experiment, summary: pd.DataFrame,
                     metric: str = "fm_accuracy") -> pd.DataFrame:
    """One row per cell: our mean ± sd over seeds, our gap to the reference cell (mean of the
    same-seed differences), and the paper's value and gap for each of the experiment's paper columns."""
    exp = get_experiment(experiment) if isinstance(experiment, str) else experiment
    summary = summary[summary.experiment == exp.name] if "experiment" in summary else summary
    if summary.empty:
        raise ValueError(f"the summary holds no rows of {exp.name}")
    order = [c.label for c in exp.cells if c.label in set(summary.cell)]
    df = seed_statistics(summary, metric).reindex(order)
    if exp.reference and exp.reference in df.index:
        df[f"Δ vs {exp.reference}"] = same_seed_gaps(summary, exp.reference, metric).mean().reindex(order)
    paper = paper_results()
    for label, table, model, task in exp.paper_columns:
        vals = {c.label: paper_value(table, model, task, c.paper_method, c.paper_setting, paper)
                for c in exp.cells if c.label in df.index and c.paper_method}
        df[label] = pd.Series(vals, dtype=float).reindex(order)
        if exp.reference and exp.reference in vals and vals[exp.reference] is not None:
            df[f"{label} Δ"] = df[label] - vals[exp.reference]
    df.index.name = exp.name
    return df


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
