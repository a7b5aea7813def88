"""Checking a bundle's training settings before any data is read, with errors that name the config key.

A value that PyTorch or the network would reject much later (a negative learning rate when the optimizer is
built, an image size the network cannot take at the first forward pass, after caching the dataset) is
reported here, in the bundle's ``initialize`` section, by the key to change on the command line
(``--learning_rate``, ``--image_size``...).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "check_training_config"]


class ConfigError(ValueError):
    """Bad bundle settings: one line ``<key>: <problem>`` per bad value, each saying what would work."""


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_training_config(
    *,
    dataset_dir: str | os.PathLike | None = None,
    image_size: Sequence[int] | None = None,
    network: Any = None,
    learning_rate: float | None = None,
    batch_size: int | None = None,
    max_epochs: int | None = None,
    val_interval: int | None = None,
    num_workers: int | None = None,
    val_fraction: float | None = None,
    probabilities: Mapping[str, float] | None = None,
    booleans: Mapping[str, Any] | None = None,
) -> bool:
    """Check the training settings of a bundle; each keyword is the config key of the same name.

    Arguments left as ``None`` are not checked.

    Args:
        dataset_dir: must exist (a dataset folder or a datalist file).
        image_size: positive integers, and sizes ``network`` takes (its ``check_spatial_size``, if it has one).
        network: the network the bundle trains (``@network_def``).
        learning_rate: a finite number > 0.
        batch_size, max_epochs, val_interval: integers >= 1.
        num_workers: an integer >= 0.
        val_fraction: a number in (0, 1).
        probabilities: further keys holding probabilities in [0, 1] (``{"flip_prob": 0.5}``).
        booleans: further keys holding ``True`` or ``False`` (``{"resume": True}``). ``python -m monai.bundle
            run --resume false`` passes the text ``'false'``, which Python takes as true: refused, not obeyed.

    ``val_interval`` greater than ``max_epochs`` is refused too: no epoch would be validated, so no best model
    written.

    Returns:
        ``True`` (so that a config expression can use it).

    Raises:
        ConfigError: listing every bad value, one line each, starting with its key.

    Example:
        >>> check_training_config(learning_rate=3e-4, batch_size=4)
        True
        >>> try:
        ...     check_training_config(learning_rate=-1e-3, batch_size=0)
        ... except ConfigError as error:
        ...     print(error)
        learning_rate: must be a finite number > 0, got -0.001 (e.g. 0.0001)
        batch_size: must be a whole number >= 1, got 0
    """
    problems: list[str] = []
    if dataset_dir is not None and not Path(dataset_dir).exists():
        problems.append(
            f"dataset_dir: {dataset_dir} not found; pass --dataset_dir with your dataset folder (BUSI classes, "
            "images/ + masks/) or a MONAI datalist .json"
        )
    if learning_rate is not None and not (
        _is_real(learning_rate) and math.isfinite(learning_rate) and learning_rate > 0
    ):
        problems.append(
            f"learning_rate: must be a finite number > 0, got {learning_rate!r} (e.g. 0.0001)"
        )
    for key, value in (("batch_size", batch_size), ("max_epochs", max_epochs), ("val_interval", val_interval)):
        if value is not None and not (_is_int(value) and value >= 1):
            problems.append(f"{key}: must be a whole number >= 1, got {value!r}")
    if num_workers is not None and not (_is_int(num_workers) and num_workers >= 0):
        problems.append(
            f"num_workers: must be a whole number >= 0 (0: load data in the main process), got {num_workers!r}"
        )
    if val_fraction is not None and not (_is_real(val_fraction) and 0.0 < val_fraction < 1.0):
        problems.append(f"val_fraction: must be a fraction between 0 and 1 (e.g. 0.2), got {val_fraction!r}")
    if _is_int(val_interval) and _is_int(max_epochs) and val_interval > max_epochs >= 1:
        problems.append(
            f"val_interval: {val_interval} is more than max_epochs {max_epochs}: no epoch would be validated and no "
            f"best model written; use a val_interval of at most {max_epochs}"
        )
    for key, value in (booleans or {}).items():
        if not isinstance(value, bool):
            problems.append(
                f"{key}: must be true or false, got {value!r}; on the command line of python -m monai.bundle run "
                f"write --{key} False (or True): there a lowercase false is the text 'false'"
            )
    for key, value in (probabilities or {}).items():
        if not (_is_real(value) and 0.0 <= value <= 1.0):
            problems.append(f"{key}: must be a probability in [0, 1], got {value!r}")
    if image_size is not None:
        if not (
            isinstance(image_size, Sequence)
            and not isinstance(image_size, str)
            and len(image_size) > 0
            and all(_is_int(n) and n >= 1 for n in image_size)
        ):
            problems.append(
                f"image_size: must be a list of positive whole numbers such as [256, 256], got {image_size!r}"
            )
        elif network is not None and hasattr(network, "check_spatial_size"):
            try:
                network.check_spatial_size(image_size)
            except ValueError as error:
                problems.append(f"image_size: {error}")
    if problems:
        raise ConfigError("\n".join(problems))
    return True
