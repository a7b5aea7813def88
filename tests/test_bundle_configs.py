"""The two bundles' configs as a maintainer reads them: every id has one type in every config of both bundles,
the bundles' configs differ only where their behaviour does, and config expressions hold no logic (loops,
comprehensions, deferred calls, type tests: those are named helpers of lesionseg)."""

from __future__ import annotations

import ast
import pydoc
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from monai.bundle import ConfigParser
from monai.bundle.config_item import ComponentLocator, ConfigComponent

from lesionseg.data.phantoms import write_phantom_dataset

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = {"dcnet": ROOT / "bundles" / "dcnet_bundle", "taichinet": ROOT / "bundles" / "taichinet_bundle"}
# the config files each workflow merges, as `python -m monai.bundle run --config_file` takes them
WORKFLOWS = {
    "train": ["train"],
    "evaluate": ["train", "evaluate"],
    "inference": ["inference"],
    "multi_gpu_train": ["train", "multi_gpu_train"],
    "prepare": ["prepare"],
}
TINY_NETWORKS = {"dcnet": [2, 4, 8, 16, 32], "taichinet": [2, 4, 8, 16, 32], "prepare": [4, 4, 8, 8, 16, 4]}
# ids whose values are the real differences between the two bundles, per config file (TaiChiNet's own: the
# easy/hard preparation); every other top-level id must be the same in both
BUNDLE_DIFFERENCES = {
    # precision: each network's default from its own BUSI check of bf16 against fp32 (docs/precision.md)
    "inference": {"network_def", "precision"},  # both run at 224 x 224
    "evaluate": set(),
    "multi_gpu_train": {"prepare_parts", "initialize"},
}


def _config_files(bundle: str, workflow: str) -> list[Path]:
    return [BUNDLES[bundle] / "configs" / f"{name}.yaml" for name in WORKFLOWS[workflow]]


def _workflows() -> list[tuple[str, str]]:
    return [
        (bundle, workflow)
        for bundle in BUNDLES
        for workflow in WORKFLOWS
        if all(path.is_file() for path in _config_files(bundle, workflow))
    ]


def _value_kind(value: Any) -> str | None:
    """What a parsed value is, as far as a config that uses it cares; ``None`` for an unset value."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (str, Path)):
        return "str or path"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "dict"
    if isinstance(value, torch.nn.Module):
        return "torch.nn.Module"
    if callable(value) and not isinstance(value, type):
        return "callable"
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _kind(parser: ConfigParser, id: str) -> str | None:
    """The kind of the top-level ``id``, evaluating only what is cheap and runs nothing: literals as they are,
    references as what they point to, components by their class (not built), expressions by their value.
    Lists (``initialize``, ``run``...) are not evaluated: they are workflow steps."""
    raw = parser.get(id)
    if isinstance(raw, str) and raw.startswith("@"):
        return _kind(parser, raw[1:])
    if isinstance(raw, dict) and "_target_" in raw:
        if raw.get("_mode_") == "callable":
            return "callable"
        target = pydoc.locate(ConfigComponent(raw, id=id, locator=ComponentLocator()).resolve_module_name())
        if isinstance(target, type):
            if issubclass(target, torch.nn.Module):
                return "torch.nn.Module"
            return f"{target.__module__}.{target.__qualname__}"
    if isinstance(raw, str) and raw.startswith("$") or isinstance(raw, dict) and "_target_" in raw:
        return _value_kind(parser.get_parsed_content(id))
    return _value_kind(raw)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("configs") / "data", num_images=10, seed=3, size=(48, 64))


def test_every_id_has_one_type_in_every_config_of_both_bundles(phantoms, tmp_path, single_process_group):
    import torch.distributed as dist

    # the multi-GPU configs ask the process group for the rank: a world of one process
    dist.init_process_group(backend="gloo")
    kinds: dict[str, dict[str, str]] = {}
    for bundle, workflow in _workflows():
        parser = ConfigParser()
        parser.read_config([str(path) for path in _config_files(bundle, workflow)])
        features = TINY_NETWORKS["prepare" if workflow == "prepare" else bundle]
        parser.update(
            {
                "bundle_root": str(tmp_path / bundle),
                "dataset_dir": str(phantoms),
                "image_size": [32, 32],
                "network_def#features": features,
                "num_workers": 0,
            }
        )
        for id in parser.get():
            if id.startswith("_"):
                continue
            kind = _kind(parser, id)
            if kind is not None:
                kinds.setdefault(id, {})[f"{bundle} {workflow}"] = kind
    differing = {id: where for id, where in kinds.items() if len(set(where.values())) > 1}
    assert not differing, f"ids with different types in different configs: {differing}"
    # the test saw what it is for: ids common to both bundles and to several workflows
    assert {"dataset_dir", "datalist", "device", "network", "prepare_parts", "finalize"} <= set(kinds)


@pytest.mark.parametrize("name", sorted(BUNDLE_DIFFERENCES))
def test_the_bundles_configs_differ_only_in_their_networks_preparation_and_precision(name):
    dcnet, taichinet = (yaml.safe_load((BUNDLES[b] / "configs" / f"{name}.yaml").read_text()) for b in BUNDLES)
    differing = {id for id in dcnet.keys() | taichinet.keys() if dcnet.get(id) != taichinet.get(id)}
    assert differing == BUNDLE_DIFFERENCES[name]


def test_both_trainings_finalize_alike():
    dcnet, taichinet = (yaml.safe_load((BUNDLES[b] / "configs" / "train.yaml").read_text()) for b in BUNDLES)
    assert dcnet["finalize"] == taichinet["finalize"] == [
        "$monai.utils.set_determinism(seed=None)",
        # only the hold that initialize took (none on a GPU or with the setting off)
        "$lesionseg.engines.release_freed_memory(held=@cpu_memory_held)",
    ]
    assert dcnet["cpu_memory_held"] == taichinet["cpu_memory_held"]
    assert "$@cpu_memory_held" in dcnet["initialize"] and "$@cpu_memory_held" in taichinet["initialize"]


def _expressions(value: Any, id: str = ""):
    """``(id, expression)`` of every ``$`` expression in a config value, import statements left out."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _expressions(item, f"{id}#{key}" if id else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _expressions(item, f"{id}#{index}")
    elif isinstance(value, str) and value.startswith("$") and not value[1:].lstrip().startswith("import "):
        yield id, value[1:]


def _logic(expression: str) -> list[str]:
    """What in ``expression`` is logic that belongs in a named helper."""
    found = []
    # references (`@train#handlers`) as plain names, which Python parses
    python = re.sub(r"@([\w#:]+)", lambda match: "_ref_" + re.sub("[#:]", "__", match.group(1)), expression)
    for node in ast.walk(ast.parse(python, mode="eval")):
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            found.append("a comprehension")
        elif isinstance(node, ast.Lambda) and not node.args.args:
            found.append("a deferred call (lambda:)")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
            found.append("a type test")
    return found


@pytest.mark.parametrize("path", sorted(ROOT.glob("bundles/*/configs/*.yaml")), ids=lambda p: f"{p.parts[-3]}/{p.name}")
def test_config_expressions_hold_no_loops_or_deferred_calls(path):
    config = yaml.safe_load(path.read_text())
    logic = {id: found for id, expression in _expressions(config) if (found := _logic(expression))}
    assert not logic, f"{path}: move these into named lesionseg helpers: {logic}"


def test_the_logic_check_finds_what_it_looks_for():
    assert _logic("[dict(i, x=i['y']) for i in @items]") == ["a comprehension"]
    assert _logic("lambda: f(@a)") == ["a deferred call (lambda:)"]
    assert _logic("[h for h in @hs if isinstance(h, T)]") == ["a comprehension", "a type test"]
    assert _logic("lambda label: label[:1]") == [] and _logic("@x if @y else None") == []
