"""Class splits: proportions, seeding, explicit lists, parsing, errors."""

from __future__ import annotations

import argparse

import pytest

from learngene_hf.data import ClassSplit, add_split_arguments, parse_class_list, split_classes, split_from_args
from learngene_hf.errors import ConfigError


def test_default_split_is_64_16_20_disjoint_and_complete():
    s = split_classes(100, seed=0)
    assert (len(s.base), len(s.open_world), len(s.novel)) == (64, 16, 20)
    assert sorted(s.base + s.open_world + s.novel) == list(range(100))
    assert s.base == sorted(s.base)


def test_split_is_seeded():
    assert split_classes(100, seed=5) == split_classes(100, seed=5)
    assert split_classes(100, seed=5) != split_classes(100, seed=6)


@pytest.mark.parametrize("n, sizes", [(10, (6, 2, 2)), (50, (32, 8, 10)), (200, (128, 32, 40)), (3, (2, 0, 1))])
def test_other_class_counts_get_the_same_proportions(n, sizes):
    s = split_classes(n)
    assert (len(s.base), len(s.open_world), len(s.novel)) == sizes
    assert sorted(s.base + s.open_world + s.novel) == list(range(n))


def test_explicit_lists_are_used_as_is_and_missing_roles_are_empty():
    s = split_classes(10, base=[0, 1, 2, 3, 4, 5], novel=[6, 7, 8, 9])
    assert s.to_dict() == {"base": [0, 1, 2, 3, 4, 5], "open_world": [], "novel": [6, 7, 8, 9]}
    assert ClassSplit.from_dict(s.to_dict()) == s


def test_overlapping_or_out_of_range_split_is_a_config_error():
    with pytest.raises(ConfigError, match=r"classes \[3\] are both base and novel"):
        ClassSplit(base=[1, 2, 3], novel=[3, 4])
    with pytest.raises(ConfigError, match=r"novel classes \[12\] do not exist.*0..9"):
        split_classes(10, base=[0, 1], novel=[12])
    with pytest.raises(ConfigError, match="more than once"):
        ClassSplit(base=[1, 1])
    with pytest.raises(ConfigError, match="unknown keys"):
        ClassSplit.from_dict({"base": [1], "novle": [2]})


def test_require_more_ways_than_classes_is_a_clear_error():
    s = split_classes(10, base=[0, 1, 2, 3, 4, 5], novel=[6, 7])
    assert s.require("base", 5) == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ConfigError, match="5-way.*novel classes are only 2"):
        s.require("novel", 5)


def test_parse_class_list():
    assert parse_class_list("0-5,8,10-12") == [0, 1, 2, 3, 4, 5, 8, 10, 11, 12]
    assert parse_class_list(" 3 ") == [3] and parse_class_list("") == []
    for bad, word in (("0-", "cannot parse"), ("a,b", "cannot parse"), ("5-2", "backwards"), ("1,1", "more than once")):
        with pytest.raises(ConfigError, match=word):
            parse_class_list(bad)


def test_split_from_command_line_arguments():
    parser = argparse.ArgumentParser()
    add_split_arguments(parser)
    s = split_from_args(parser.parse_args(["--base-classes", "0-5", "--novel-classes", "6-9"]), 10)
    assert s == ClassSplit([0, 1, 2, 3, 4, 5], [], [6, 7, 8, 9])
    default = split_from_args(parser.parse_args(["--split-seed", "2"]), 100)
    assert default == split_classes(100, seed=2)
