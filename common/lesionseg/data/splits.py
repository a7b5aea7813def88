"""Leak-free, class-stratified dataset splits that keep groups of near-duplicate images together.

Groups of near-duplicate images (:mod:`lesionseg.data.grouping`) never straddle two sections: a split that
puts copies of one image on both sides overestimates accuracy.

Splitting assigns whole groups ("units") to sections greedily, the largest groups first and then in an
order shuffled by ``seed``: each unit goes to the section where its classes are furthest below their
target share (Sainte-Laguë rounding, so every class is divided as close to the requested fractions as the
groups allow). The result depends only on the items, their order and the seed.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np

from lesionseg.data.datalist import read_labelled_section
from lesionseg.data.grouping import Groups, case_id, connected_components, resolve_groups
from lesionseg.data.io import DataError, PathLike
from lesionseg.data.readers import dataset_items, natural_key, read_dataset

__all__ = [
    "kfold_split",
    "train_val_test_split",
    "make_datalist",
    "select_classes",
    "datalist_section",
]

logger = logging.getLogger(__name__)


def _units(items: Sequence[Mapping], groups: Groups | None) -> list[list[int]]:
    # item indices that must stay together: members of one group, and items sharing a case id
    indices: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        indices.setdefault(case_id(item), []).append(index)
    chains = list(indices.values())
    for group in groups or ():
        chains.append([index for case in group for index in indices.get(case, ())])
    edges = [(chain[k], chain[k + 1]) for chain in chains for k in range(len(chain) - 1)]
    return connected_components(len(items), np.asarray(edges, dtype=np.int64).reshape(-1, 2))


def _assign(
    items: Sequence[Mapping], weights: Sequence[float], seed: int, groups: Groups | None, stratify_key: str | None
) -> list[list[int]]:
    # greedy Sainte-Laguë apportionment of whole units to sections with the given weights
    strata: list[Hashable] = [item.get(stratify_key) if stratify_key else None for item in items]
    totals = Counter(strata)
    units = _units(items, groups)
    order = list(range(len(units)))
    random.Random(seed).shuffle(order)
    order.sort(key=lambda u: -len(units[u]))  # stable: large groups first, then the shuffled order
    counts = [Counter() for _ in weights]
    sizes = [0] * len(weights)
    sections: list[list[int]] = [[] for _ in weights]
    open_sections = [s for s, weight in enumerate(weights) if weight > 0]
    for u in order:
        unit = units[u]
        unit_counts = Counter(strata[i] for i in unit)
        # (class shares after adding half the unit, then size share, then section index) per open section
        costs = [
            (
                sum(n * (counts[s][k] + n / 2) / (weights[s] * totals[k]) for k, n in unit_counts.items()),
                (sizes[s] + len(unit) / 2) / weights[s],
                s,
            )
            for s in open_sections
        ]
        best = min(costs)[2]
        counts[best].update(unit_counts)
        sizes[best] += len(unit)
        sections[best] += unit
    return [sorted(section) for section in sections]


def kfold_split(
    items: Sequence[Mapping],
    num_folds: int = 5,
    seed: int = 0,
    groups: Groups | None = None,
    stratify_key: str | None = "class",
) -> list[list[Mapping]]:
    """Split items into ``num_folds`` disjoint folds covering all of them.

    Groups never straddle folds, and each class of ``stratify_key`` is spread as evenly as the groups
    allow (items lacking the key form one class).

    Args:
        items: data dicts.
        num_folds: number of folds, at least 2.
        seed: shuffling seed.
        groups: lists of case ids to keep in one fold (see :func:`lesionseg.data.grouping.case_id`); unknown ids
            are ignored.
        stratify_key: item key to balance; ``None`` balances sizes only.

    Returns:
        the folds, each in the items' order.

    Example:
        >>> items = [{"image": f"{c}{i}.png", "class": c} for c in "ab" for i in range(10)]
        >>> folds = kfold_split(items, num_folds=5, groups=[["a0", "a1"]])
        >>> [sorted(Counter(item["class"] for item in fold).values()) for fold in folds]
        [[2, 2], [2, 2], [2, 2], [2, 2], [2, 2]]
    """
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2, got {num_folds}")
    if num_folds > len(items):
        raise ValueError(f"cannot make {num_folds} folds of {len(items)} items")
    sections = _assign(items, [1.0] * num_folds, seed, groups, stratify_key)
    if any(not section for section in sections):
        raise ValueError(f"the groups leave too few units for {num_folds} folds")
    return [[items[i] for i in section] for section in sections]


def train_val_test_split(
    items: Sequence[Mapping],
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    groups: Groups | None = None,
    stratify_key: str | None = "class",
) -> dict[str, list[Mapping]]:
    """Split items into training, validation and (when ``test_fraction > 0``) test sections.

    Args:
        items: data dicts.
        val_fraction: share of validation items, in [0, 1).
        test_fraction: share of test items, in [0, 1); ``val_fraction + test_fraction < 1``.
        seed: shuffling seed.
        groups: lists of case ids to keep in one section; unknown ids are ignored.
        stratify_key: item key whose classes each section gets in proportion; ``None``: sizes only.

    Returns:
        ``{"training": [...], "validation": [...]}`` plus ``"test"`` when ``test_fraction > 0``, each in
        the items' order.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be in [0, 1) "
            "and leave some training data"
        )
    names = ["training", "validation", "test"] if test_fraction > 0 else ["training", "validation"]
    weights = [1 - val_fraction - test_fraction, val_fraction, test_fraction][: len(names)]
    sections = _assign(items, weights, seed, groups, stratify_key)
    for name, weight, section in zip(names, weights, sections, strict=True):
        if weight > 0 and not section:
            logger.warning("the %s section is empty: %d items are too few for a %.2f share", name, len(items), weight)
    return {name: [items[i] for i in section] for name, section in zip(names, sections, strict=True)}


def make_datalist(
    source: PathLike | Sequence[Mapping],
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    num_folds: int | None = None,
    fold: int | None = None,
    seed: int = 0,
    groups: str | PathLike | Groups | None = "auto",
    stratify_key: str | None = "class",
) -> dict[str, list[Mapping]]:
    """Split a dataset into MONAI datalist sections.

    Without ``num_folds``: a :func:`train_val_test_split`. With ``num_folds`` and ``fold``: the test
    section (if ``test_fraction > 0``) is held out first, the rest divided with :func:`kfold_split`, and
    fold ``fold`` is the validation section, the other folds training (``val_fraction`` is then unused).

    Args:
        source: a dataset :func:`lesionseg.data.readers.read_dataset` reads, or its data dicts.
        val_fraction: validation share without folds.
        test_fraction: test share, held out before any folds.
        num_folds: number of cross-validation folds.
        fold: which fold validates, ``0 <= fold < num_folds``.
        seed: shuffling seed; the same arguments always give the same datalist.
        groups: near-duplicate groups, see :func:`lesionseg.data.grouping.resolve_groups` (default ``"auto"``).
        stratify_key: item key to balance across sections.

    Returns:
        ``{"training": [...], "validation": [...]}`` and ``"test"`` when ``test_fraction > 0``.
    """
    if (num_folds is None) != (fold is None):
        raise ValueError(f"num_folds and fold go together, got num_folds={num_folds}, fold={fold}")
    if num_folds is not None and not 0 <= fold < num_folds:
        raise ValueError(f"fold must be in [0, {num_folds}), got {fold}")
    is_path = isinstance(source, (str, os.PathLike))
    items = dataset_items(source)
    group_list = resolve_groups(groups, source if is_path else None, items)
    if num_folds is None:
        return train_val_test_split(items, val_fraction, test_fraction, seed, group_list, stratify_key)
    datalist = {}
    if test_fraction > 0:
        held_out = train_val_test_split(items, 0.0, test_fraction, seed, group_list, stratify_key)
        items, datalist["test"] = held_out["training"], held_out["test"]
    validation = kfold_split(items, num_folds, seed, group_list, stratify_key)[fold]
    validation_ids = {id(item) for item in validation}
    return {
        "training": [item for item in items if id(item) not in validation_ids],
        "validation": validation,
        **datalist,
    }


def select_classes(
    items: Sequence[Mapping], classes: str | Sequence[str] | None, source: PathLike, section: str = "items"
) -> list[Mapping]:
    """The items whose ``"class"`` is one of ``classes``, in their order (all of them when ``classes`` is ``None``).

    This is the lesion-only protocol of TaiChiNet's headline BUSI table (``classes=["benign", "malignant"]``:
    no normal images in training or evaluation) as one filter on a datalist section.

    Args:
        items: data dicts, e.g. one section of a datalist.
        classes: the class names to keep (a single name is one class); ``None`` keeps every item.
        source: the dataset or datalist the items come from, named in errors.
        section: the section's name, for errors and warnings.

    Raises:
        DataError: naming ``source``, when an item has no ``"class"`` (a folder pair or a datalist without
            classes cannot be filtered by class) or when no item of ``section`` is of these classes.
        ValueError: ``classes`` is not ``None``, a string or a list of strings.
    """
    if classes is None:
        return list(items)
    wanted = [classes] if isinstance(classes, str) else classes
    if not isinstance(wanted, Sequence) or not wanted or not all(isinstance(name, str) for name in wanted):
        raise ValueError(f"classes must be None, a class name or a non-empty list of class names, got {classes!r}")
    unclassed = next((item for item in items if item.get("class") is None), None)
    if unclassed is not None:
        raise DataError(
            source,
            f"classes={list(wanted)} keeps images by class, but {unclassed['image']} of its {section!r} "
            'section has no class (a BUSI folder gives each image its class folder; a datalist needs "class" keys)',
        )
    present = sorted({str(item["class"]) for item in items}, key=natural_key)
    kept = [item for item in items if item["class"] in wanted]
    if not kept:
        raise DataError(source, f"its {section!r} section has no image of the classes {list(wanted)}; it has {present}")
    missing = [name for name in wanted if name not in present]
    if missing:
        logger.warning(
            "the %r section of %s has no image of the classes %s (it has %s)", section, source, missing, present
        )
    logger.info(
        "%r section of %s: %d of %d images kept (classes %s)", section, source, len(kept), len(items), list(wanted)
    )
    return kept


def datalist_section(
    source: PathLike, section: str = "training", classes: str | Sequence[str] | None = None, **split_kwargs
) -> list[Mapping]:
    """One section of a dataset's datalist, for bundle configs.

    Args:
        source: a datalist JSON (its ``section`` is returned as written; ``split_kwargs`` are unused) or a
            dataset folder (split with :func:`make_datalist`; the same arguments give the same split, so
            the training and validation calls of a bundle agree).
        section: ``"training"``, ``"validation"``, ``"test"``, or ``"all"``: every labelled item of the dataset
            (of all sections of a datalist), unsplit, e.g. to evaluate a model on a whole new dataset.
        classes: keep only the items of these classes (:func:`select_classes`), after the split: a folder is
            split with all its images, so the kept items of each section are the same whether or not the
            filter is on (``["benign", "malignant"]`` is BUSI without normal images). ``None``: every item.
        split_kwargs: :func:`make_datalist` arguments.

    Every item returned has a ``"label"``: the bundles train, validate and evaluate on these sections.

    Raises:
        DataError: naming the JSON, when it has no such section, when the section is empty (training would
            end without a model: no epoch is validated) or when an item has no ``"label"``; naming
            ``source``, when ``classes`` is set and an item has no class or none is of these classes.
        ValueError: the split has no such section (e.g. ``"test"`` with ``test_fraction=0``); a
            :class:`DataError` naming ``source`` when it is empty.
    """
    return select_classes(_unfiltered_section(source, section, **split_kwargs), classes, source, section)


def _unfiltered_section(source: PathLike, section: str, **split_kwargs) -> list[Mapping]:
    # datalist_section before its class filter
    if section == "all":
        return read_dataset(source)
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".json":
        return read_labelled_section(path, section)
    datalist = make_datalist(source, **split_kwargs)
    if section not in datalist:
        raise ValueError(f"the split of {source} has no section {section!r}; it has {list(datalist)}")
    if not datalist[section]:
        sizes = ", ".join(f"{name} {len(items)}" for name, items in datalist.items())
        raise DataError(
            source,
            f"its split has an empty {section!r} section ({sizes} images); use more images, or a larger "
            "share for it (val_fraction)",
        )
    return datalist[section]
