"""Leak-free, class-stratified dataset splits that keep groups of near-duplicate images together.

Public ultrasound datasets hold repeated scans of one lesion (for BUSI, Pawłowska et al.'s 2023 letter to
Data in Brief lists duplicated and near-duplicate images); a split that puts copies of one image on both
sides overestimates accuracy. Groups are lists of case ids (an item's ``"case"``, else its image stem),
stored as ``{"groups": [["benign (207)", "benign (256)"], ...]}`` in ``near_duplicate_groups.json``, and
found for a new dataset with :func:`find_groups`.

Splitting assigns whole groups ("units") to sections greedily, the largest groups first and then in an
order shuffled by ``seed``: each unit goes to the section where its classes are furthest below their
target share (Sainte-Laguë rounding, so every class is divided as close to the requested fractions as the
groups allow). The result depends only on the items, their order and the seed.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from lesionseg.data.io import DataError, PathLike, read_image, read_json
from lesionseg.data.readers import detect_layout, natural_key, read_datalist, read_dataset, require_labels

__all__ = [
    "GROUPS_FILENAME",
    "case_id",
    "load_groups",
    "save_groups",
    "image_signature",
    "similar_groups",
    "find_groups",
    "kfold_split",
    "train_val_test_split",
    "resolve_groups",
    "make_datalist",
    "select_classes",
    "datalist_section",
]

logger = logging.getLogger(__name__)

#: file name :func:`resolve_groups` looks for beside a dataset with ``groups="auto"``
GROUPS_FILENAME = "near_duplicate_groups.json"

Groups = Sequence[Sequence[str]]


def case_id(item: Mapping) -> str:
    """The id groups use for a data dict: its ``"case"``, else the stem of its image file."""
    return str(item["case"]) if item.get("case") is not None else Path(item["image"]).stem


def load_groups(path: PathLike) -> list[list[str]]:
    """Read groups of case ids from a ``{"groups": [[case, ...], ...]}`` JSON file.

    Raises:
        DataError: naming the file, when it is missing, not JSON or not in that format.
    """
    path = Path(path)
    content = read_json(path, "groups file")
    groups = content.get("groups") if isinstance(content, dict) else None
    if not isinstance(groups, list) or not all(
        isinstance(group, list) and all(isinstance(case, str) for case in group) for group in groups
    ):
        raise DataError(path, 'expected {"groups": [["case a", "case b"], ...]} (lists of case ids)')
    return [list(group) for group in groups]


def save_groups(path: PathLike, groups: Groups, description: str | None = None) -> Path:
    """Write groups in the format :func:`load_groups` reads; returns the path."""
    path = Path(path)
    content: dict[str, object] = {"description": description} if description else {}
    content["groups"] = [list(group) for group in groups]
    with open(path, "w") as file:
        json.dump(content, file, indent=1)
        file.write("\n")
    return path


def image_signature(image: np.ndarray, size: int = 16) -> np.ndarray:
    """A ``size * size`` thumbnail of a 2D image, zero-mean and unit-norm, as float32.

    The dot product of two signatures is the correlation of the thumbnails: near 1 for the same scan saved
    twice, re-encoded, resized or with a caliper mark added. A constant image gives zeros.
    """
    thumbnail = np.asarray(
        Image.fromarray(np.asarray(image, dtype=np.float32)).resize((size, size), Image.Resampling.BOX),
        dtype=np.float64,
    ).ravel()
    thumbnail -= thumbnail.mean()
    norm = np.linalg.norm(thumbnail)
    return (thumbnail / norm if norm > 0 else thumbnail).astype(np.float32)


def _components(num_nodes: int, edges: np.ndarray) -> list[list[int]]:
    # connected components (union-find) of an (E, 2) edge array, each sorted, in order of first node
    parent = list(range(num_nodes))

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in edges.tolist():
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = {}
    for node in range(num_nodes):
        members.setdefault(root(node), []).append(node)
    return list(members.values())


def similar_groups(signatures: np.ndarray, threshold: float = 0.96, block: int = 1024) -> list[list[int]]:
    """Groups (index lists, two or more members) of rows linked by a dot product above ``threshold``.

    Links are transitive (union-find). The pairwise products are computed ``block`` rows at a time, so
    memory stays at ``block * N`` floats.

    Args:
        signatures: (N, D) unit-norm rows, e.g. from :func:`image_signature`.
        threshold: correlation above which two rows are linked.
        block: rows per matrix product.
    """
    signatures = np.asarray(signatures, dtype=np.float32)
    num = len(signatures)
    edges = []
    for start in range(0, num, block):
        rows, cols = np.nonzero(signatures[start : start + block] @ signatures.T > threshold)
        rows += start
        edges.append(np.stack([rows[rows < cols], cols[rows < cols]], axis=1))
    edges_array = np.concatenate(edges) if edges else np.zeros((0, 2), dtype=np.int64)
    return [group for group in _components(num, edges_array) if len(group) > 1]


def find_groups(
    source_or_items: PathLike | Sequence[Mapping],
    signature_size: int = 16,
    threshold: float = 0.96,
    progress: bool | None = False,
) -> list[list[str]]:
    """Find groups of near-duplicate images by the correlation of small thumbnails.

    With the defaults this finds every group of ``near_duplicate_groups.json`` of the BUSI development
    subset (623 images, a few seconds, most of it PNG decoding); lower ``threshold`` to group more
    aggressively (a false group only costs a little split balance, a missed one leaks).

    Args:
        source_or_items: a dataset :func:`lesionseg.data.readers.read_dataset` reads, or its data dicts.
        signature_size: thumbnail side, see :func:`image_signature`.
        threshold: correlation above which two images are near-duplicates.
        progress: show a progress bar on stderr (``None``: only on a terminal).

    Returns:
        groups of case ids (see :func:`case_id`), naturally sorted.
    """
    items = _as_items(source_or_items)
    signatures = np.zeros((len(items), signature_size * signature_size), dtype=np.float32)
    for index, item in enumerate(tqdm(items, desc="thumbnails", unit="image", disable=_tqdm_disable(progress))):
        signatures[index] = image_signature(read_image(item["image"]), signature_size)
    groups = [{case_id(items[i]) for i in group} for group in similar_groups(signatures, threshold)]
    # items sharing a case id are one case, not a group
    return sorted((sorted(g, key=natural_key) for g in groups if len(g) > 1), key=lambda g: natural_key(g[0]))


def _tqdm_disable(progress: bool | None) -> bool | None:
    return None if progress is None else not progress


def _as_items(source_or_items: PathLike | Sequence[Mapping]) -> list[Mapping]:
    if isinstance(source_or_items, (str, os.PathLike)):
        return read_dataset(source_or_items)
    return list(source_or_items)


def _units(items: Sequence[Mapping], groups: Groups | None) -> list[list[int]]:
    # item indices that must stay together: members of one group, and items sharing a case id
    indices: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        indices.setdefault(case_id(item), []).append(index)
    chains = list(indices.values())
    for group in groups or ():
        chains.append([index for case in group for index in indices.get(case, ())])
    edges = [(chain[k], chain[k + 1]) for chain in chains for k in range(len(chain) - 1)]
    return _components(len(items), np.asarray(edges, dtype=np.int64).reshape(-1, 2))


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
        groups: lists of case ids to keep in one fold (see :func:`case_id`); unknown ids are ignored.
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


def resolve_groups(
    groups: str | PathLike | Groups | None, source: PathLike | None = None, items: Sequence[Mapping] | None = None
) -> list[list[str]]:
    """Turn a ``groups`` argument into lists of case ids.

    Args:
        groups: ``"auto"`` (the :data:`GROUPS_FILENAME` in the dataset's folder or its parent, else none),
            ``"detect"`` (:func:`find_groups` on ``items``), ``"none"`` or ``None`` (none), a path to a
            groups JSON, or the groups themselves.
        source: the dataset path, where ``"auto"`` looks.
        items: the data dicts, for ``"detect"`` and to warn when no group matches any item.
    """
    if groups is None or groups == "none":
        return []
    if groups == "auto":
        resolved = []
        if source is not None:
            layout, path = detect_layout(source)
            folder = path.parent if layout == "datalist" else path
            for candidate in (folder / GROUPS_FILENAME, folder.parent / GROUPS_FILENAME):
                if candidate.is_file():
                    logger.info("keeping the near-duplicate groups of %s together", candidate)
                    resolved = load_groups(candidate)
                    break
    elif groups == "detect":
        if items is None:
            raise ValueError('groups="detect" needs the items')
        return find_groups(items)
    elif isinstance(groups, (str, os.PathLike)):
        resolved = load_groups(groups)
    else:
        resolved = [list(group) for group in groups]
    if resolved and items is not None:
        known = {case_id(item) for item in items}
        if not any(case in known for group in resolved for case in group):
            logger.warning("no case of the %d groups is in the dataset; check the groups file", len(resolved))
    return resolved


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
        groups: near-duplicate groups, see :func:`resolve_groups` (default ``"auto"``).
        stratify_key: item key to balance across sections.

    Returns:
        ``{"training": [...], "validation": [...]}`` and ``"test"`` when ``test_fraction > 0``.
    """
    if (num_folds is None) != (fold is None):
        raise ValueError(f"num_folds and fold go together, got num_folds={num_folds}, fold={fold}")
    if num_folds is not None and not 0 <= fold < num_folds:
        raise ValueError(f"fold must be in [0, {num_folds}), got {fold}")
    is_path = isinstance(source, (str, os.PathLike))
    items = _as_items(source)
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
        items = read_datalist(path, section)
        if not items:
            raise DataError(
                path,
                f"section {section!r} is empty; list labelled items in it ({_EMPTY_SECTION_WHY[section]})"
                if section in _EMPTY_SECTION_WHY
                else f"section {section!r} is empty; list labelled items in it",
            )
        require_labels(path, section, items)
        return items
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


# why a bundle cannot do without a section
_EMPTY_SECTION_WHY = {
    "training": "there is nothing to train on",
    "validation": "training chooses the best model on it and, without it, would write no models/model.pt",
}
