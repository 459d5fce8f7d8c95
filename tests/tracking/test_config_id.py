"""``sah.config_id`` names a configuration: what was trained, not where it ran or which module
held the code (reports pool a configuration's folds by it)."""

from __future__ import annotations

import copy

from sah.tracking.runs import config_id

RESOLVED = {
    "seed": 0,
    "fold": 0,
    "paths": {"root_dir": "/a"},
    "task": {
        "runner": "sah.tasks.segmentation.runner.SegmentationRunner",
        "module": {"_target_": "sah.tasks.segmentation.module.SegmentationModule", "lr": 1e-3},
    },
    "data": {"fold": 0, "cache_dir": "/c", "batch_size": 8},
    "adapter": {"method": "lora_c", "rank": 4},
}


def changed(path: tuple[str, ...], value: object) -> dict:
    tree = copy.deepcopy(RESOLVED)
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return tree


def test_folds_seeds_and_paths_share_the_id() -> None:
    first = config_id(RESOLVED)
    assert config_id(changed(("fold",), 2)) == first
    assert config_id(changed(("data", "fold"), 2)) == first
    assert config_id(changed(("seed",), 7)) == first
    assert config_id(changed(("data", "cache_dir"), "/elsewhere")) == first


def test_what_was_trained_changes_the_id() -> None:
    first = config_id(RESOLVED)
    assert config_id(changed(("task", "module", "lr"), 1e-2)) != first
    assert config_id(changed(("adapter", "rank"), 8)) != first
    assert config_id(changed(("data", "batch_size"), 4)) != first


def test_moving_a_module_keeps_the_id_and_another_class_does_not() -> None:
    first = config_id(RESOLVED)
    moved = changed(("task", "module", "_target_"), "sah.tasks.segmentation.SegmentationModule")
    moved["task"]["runner"] = "sah.tasks.segmentation_run.SegmentationRunner"
    assert config_id(moved) == first
    other = changed(("task", "module", "_target_"), "sah.tasks.segmentation.module.Other")
    assert config_id(other) != first
