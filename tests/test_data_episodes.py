"""Task streams and N-way K-shot episodes: sizes, determinism, disjointness, errors."""

from __future__ import annotations

import pytest
import torch

from learngene_hf.data import ImageTensors, episode, make_task_stream, sample_episodes
from learngene_hf.errors import ConfigError, DataError


def _data(num_classes: int = 10, per_class: int = 30, seed: int = 0) -> ImageTensors:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    labels = labels[torch.randperm(len(labels), generator=g)]
    images = torch.randint(0, 256, (len(labels), 3, 4, 4), dtype=torch.uint8, generator=g)
    return ImageTensors(images, labels, [f"class{i}" for i in range(num_classes)])


def test_episode_sizes_labels_and_disjoint_support_query():
    data = _data()
    eps = sample_episodes(data, [1, 3, 5, 7, 9, 2], num_episodes=4, ways=5, shots=3, queries=4, seed=1)
    assert [e.index for e in eps] == [0, 1, 2, 3]
    for e in eps:
        assert len(e.classes) == 5 and set(e.classes) <= {1, 2, 3, 5, 7, 9}
        assert e.support_images.shape == (15, 3, 4, 4) and e.query_images.shape == (20, 3, 4, 4)
        assert e.support_labels.tolist() == [c for c in range(5) for _ in range(3)]
        assert e.query_labels.tolist() == [c for c in range(5) for _ in range(4)]
        assert not set(e.support_indices.tolist()) & set(e.query_indices.tolist())
        # local label k is global class classes[k]
        assert data.labels[e.support_indices].tolist() == [e.classes[k] for k in e.support_labels.tolist()]
        assert data.labels[e.query_indices].tolist() == [e.classes[k] for k in e.query_labels.tolist()]
        assert torch.equal(e.support_images, data.images[e.support_indices])


def test_episodes_are_deterministic_and_independent_of_how_many_are_drawn():
    data = _data()
    a = sample_episodes(data, list(range(10)), 6, seed=3, shots=2, queries=3)
    b = sample_episodes(data, list(reversed(range(10))), 3, seed=3, shots=2, queries=3)
    single = episode(data, list(range(10)), 4, seed=3, shots=2, queries=3)
    for x, y in zip(a[:3], b):
        assert x.classes == y.classes and torch.equal(x.support_images, y.support_images)
        assert torch.equal(x.query_indices, y.query_indices)
    assert torch.equal(single.support_indices, a[4].support_indices)
    other = sample_episodes(data, list(range(10)), 6, seed=4, shots=2, queries=3)
    assert any(not torch.equal(x.support_indices, y.support_indices) for x, y in zip(a, other))


def test_too_few_images_names_the_class_and_counts():
    data = _data(per_class=30)
    keep = ~((data.labels == 4) & (torch.arange(len(data)) % 3 != 0))  # class 4 keeps about a third
    small = ImageTensors(data.images[keep], data.labels[keep], data.class_names)
    n4 = small.class_counts()[4]
    with pytest.raises(DataError, match=rf"needs 25 images per class.*class 4 \('class4'\) has {n4}"):
        sample_episodes(small, [0, 1, 2, 3, 4], 2, ways=5, shots=10, queries=15)


def test_more_ways_than_classes_is_a_config_error():
    with pytest.raises(ConfigError, match="5-way.*only 3"):
        sample_episodes(_data(), [0, 1, 2], 1, ways=5)
    with pytest.raises(ConfigError, match="5-way.*only 2"):
        make_task_stream(_data(), _data(seed=1), [0, 1], num_tasks=2)


def test_task_stream_covers_classes_before_repeating_and_is_seeded():
    train, test = _data(10, 30), _data(10, 10, seed=1)
    tasks = make_task_stream(
        train, test, list(range(10)), num_tasks=5, ways=3, seed=0, train_per_class=7, test_per_class=4
    )
    assert [t.task_id for t in tasks] == list(range(5))
    firsts = [c for t in tasks[:3] for c in t.classes]
    assert len(set(firsts)) == 9  # the first 9 draws use 9 different classes
    for t in tasks:
        assert len(set(t.classes)) == 3
        assert t.train_images.shape == (21, 3, 4, 4) and t.test_images.shape == (12, 3, 4, 4)
        assert t.train_labels.tolist() == [k for k in range(3) for _ in range(7)]
        assert train.labels[t.train_indices].tolist() == [t.classes[k] for k in t.train_labels.tolist()]
        assert test.labels[t.test_indices].tolist() == [t.classes[k] for k in t.test_labels.tolist()]
    again = make_task_stream(
        train, test, list(range(10)), num_tasks=5, ways=3, seed=0, train_per_class=7, test_per_class=4
    )
    assert all(a.classes == b.classes and torch.equal(a.train_indices, b.train_indices) for a, b in zip(tasks, again))
    other = make_task_stream(train, test, list(range(10)), num_tasks=5, ways=3, seed=1)
    assert [t.classes for t in other] != [t.classes for t in tasks]


def test_task_stream_repeats_classes_when_tasks_need_more():
    train, test = _data(6, 5), _data(6, 2, seed=1)
    tasks = make_task_stream(train, test, [0, 1, 2, 3, 4, 5], num_tasks=8, ways=5)
    assert len(tasks) == 8 and all(len(set(t.classes)) == 5 for t in tasks)
    assert all(len(t.train_indices) == 25 and len(t.test_indices) == 10 for t in tasks)
    assert tasks[0].to_dict()["class_names"] == [f"class{c}" for c in tasks[0].classes]


def test_task_stream_too_few_images_names_split_and_class():
    train, test = _data(6, 5), _data(6, 2, seed=1)
    with pytest.raises(DataError, match="train split.*class 0 \\('class0'\\) has 5"):
        make_task_stream(train, test, [0, 1, 2, 3, 4], num_tasks=1, train_per_class=8)
