"""The feature-based selection strategies on features whose answer is known: four clusters in the plane."""

from __future__ import annotations

import numpy as np
import pytest

from cache.data.datasets import ImageFile
from cache.errors import InvalidOption
from cache.selection import priority_order
from cache.strategies import Features

CENTRES = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
SIZES = (20, 12, 8, 4)


def world(seed: int = 0) -> tuple[list[ImageFile], Features, dict[str, int]]:
    """Four clusters (sizes 20, 12, 8, 4), each a tight cloud around its centre plus the centre itself; two domains,
    the label alternating; returns the files, their features and each file's cluster."""
    rng = np.random.default_rng(seed)
    files, keys, vectors, cluster = [], {}, {}, {}
    for c, (centre, size) in enumerate(zip(CENTRES, SIZES, strict=True)):
        for i in range(size):
            path = f"d{i % 2}/c{i % 2}/{c}-{i}.png"
            point = centre if i == 0 else centre + rng.normal(0, 1.0, 2)
            files.append(ImageFile(path, f"d{i % 2}", i % 2))
            keys[path], vectors[f"sha-{path}"], cluster[path] = f"sha-{path}", point.astype(np.float32), c
    return files, Features("test", keys, vectors), cluster


def test_kcenter_covers_every_cluster_first_and_starts_from_what_is_bought():
    files, features, cluster = world()
    order = priority_order(files, "kcenter", 0, features=features)
    assert sorted(f.path for f in order) == sorted(f.path for f in files), "a complete order"
    assert {cluster[f.path] for f in order[:4]} == {0, 1, 2, 3}, "four picks, four clusters"
    bought = frozenset(features.keys[f.path] for f in files if cluster[f.path] == 3)
    after = priority_order(files, "kcenter", 0, features=features, bought=bought)
    assert {cluster[f.path] for f in after[:3]} == {0, 1, 2}, "what is bought already covers cluster 3"
    assert after == priority_order(files, "kcenter", 0, features=features, bought=bought), "deterministic"


def test_typiclust_takes_a_typical_image_of_each_uncovered_cluster_largest_first():
    files, features, cluster = world()
    order = priority_order(files, "typiclust", 0, features=features, budget=4)
    picked = order[:4]
    assert [cluster[f.path] for f in picked] == [0, 1, 2, 3], "one per cluster, the largest first"
    for f in picked:
        assert np.linalg.norm(features.vectors[features.keys[f.path]] - CENTRES[cluster[f.path]]) < 1.0, (
            "a typical image, near its cluster's centre, not an outlier"
        )
    bought = frozenset(features.keys[f.path] for f in files if cluster[f.path] == 0)
    after = priority_order(files, "typiclust", 0, features=features, budget=2, bought=bought)
    assert not {cluster[f.path] for f in after[:2]} & {0}, "cluster 0 is covered by what was bought"
    assert sorted(f.path for f in order) == sorted(f.path for f in files)


def test_balanced_orders_each_domain_and_class_cell_on_its_own():
    files, features, _ = world()
    for strategy in ("kcenter", "typiclust"):
        order = priority_order(files, strategy, 1, features=features, budget=8, balanced=True)
        for n in range(1, len(order) + 1):
            counts = {}
            for f in order[:n]:
                counts[(f.domain, f.label)] = counts.get((f.domain, f.label), 0) + 1
            full = {cell: sum(1 for f in files if (f.domain, f.label) == cell) for cell in counts}
            open_cells = [c for c in counts if counts[c] < full[c]]
            if open_cells:
                assert max(counts.values()) - min(counts[c] for c in open_cells) <= 1, (strategy, n, counts)


def test_feature_strategies_say_what_they_miss_in_one_line():
    files, features, _ = world()
    with pytest.raises(InvalidOption, match="needs the student's features"):
        priority_order(files, "kcenter", 0)
    partial = Features("test", dict(list(features.keys.items())[5:]), features.vectors)
    order = priority_order(files, "typiclust", 0, features=partial, budget=4)
    assert {f.path for f in order[-5:]} == {f.path for f in files[:5]}, "files with no features come last"
    with pytest.raises(InvalidOption, match="--balanced applies to the feature-based"):
        priority_order(files, "random", 0, balanced=True)


def test_the_rounds_probe_is_least_sure_between_the_classes_and_where_the_label_disagrees():
    from cache.strategies.uncertainty import probe_scores

    points = {f"k{i}": np.array([x, 0.0], np.float32) for i, x in enumerate([-3, -2.5, -2, 2, 2.5, 3, 0.1, -2.8, 2.8])}
    features = Features("test", {k: k for k in points}, points)
    classes = np.array([[1.0, 0.0], [0.0, 1.0]])
    teacher = {k: (classes[0] if points[k][0] < 0 else classes[1]) for k in ("k0", "k1", "k2", "k3", "k4", "k5")}
    labels = {"k6": 0, "k7": 0, "k8": 0}  # k8 sits among class 1 but is labelled 0
    entropy = probe_scores(features, teacher, classes, 10.0, labels, "entropy")
    assert set(entropy) == {"k6", "k7", "k8"}, "only the images not bought are scored"
    assert entropy["k6"] > entropy["k7"] and entropy["k6"] > entropy["k8"], "the ambiguous middle first"
    disagreement = probe_scores(features, teacher, classes, 10.0, labels, "disagreement")
    assert disagreement["k8"] > disagreement["k7"], "where the probe expects the teacher to contradict the label"
    with pytest.raises(InvalidOption, match="--acquire 'margin' is not one of"):
        probe_scores(features, teacher, classes, 10.0, labels, "margin")
