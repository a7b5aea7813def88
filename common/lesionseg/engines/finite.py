"""Refusing non-finite numbers, and thresholds outside (0, 1), where they would otherwise pass silently as
"no lesion".

A checkpoint written by a diverged training holds NaN or infinite weights; the network then gives NaN
logits, ``sigmoid(NaN) >= 0.5`` is false everywhere, and every image reads "no lesion" with no error. The
same happens when a network meets an input it overflows on. These checks turn both into errors that name the
checkpoint (and its first bad tensor) or the image.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from lesionseg.engines.checkpoint_loader import WeightsOnlyCheckpointLoader
from lesionseg.utils.meta import source_filename

__all__ = [
    "NonFiniteError",
    "FiniteCheckpointLoader",
    "RefuseNonFinited",
    "check_finite_output",
    "check_finite_weights",
    "check_threshold",
    "first_non_finite",
]


class NonFiniteError(ValueError):
    """Weights or network outputs hold NaN or infinity; the message names the file and what to do."""


def _counts(tensor: torch.Tensor) -> tuple[int, int]:
    """(NaN count, infinity count) of a floating-point or complex tensor."""
    nan = int(torch.isnan(tensor).sum())
    return nan, int((~torch.isfinite(tensor)).sum()) - nan


def _is_non_finite(value: Any) -> bool:
    return (
        isinstance(value, torch.Tensor)
        and (value.is_floating_point() or value.is_complex())
        and not bool(torch.isfinite(value).all())
    )


def first_non_finite(state: Mapping[str, Any]) -> str | None:
    """The first key of ``state`` (a state dict) whose floating-point tensor holds NaN or infinity, else ``None``."""
    return next((key for key, value in state.items() if _is_non_finite(value)), None)


def check_finite_weights(state: Mapping[str, Any], source: str | os.PathLike) -> None:
    """Refuse a state dict with NaN or infinite weights.

    Args:
        state: tensor name -> tensor (a network's ``state_dict``, as saved or as loaded).
        source: the checkpoint file, named in the message.

    Raises:
        NonFiniteError: ``"<source>: refused: tensor '<first bad key>' holds ..."``.
    """
    key = first_non_finite(state)
    if key is None:
        return
    bad = [k for k, v in state.items() if _is_non_finite(v)]
    nan, infinite = _counts(state[key])
    raise NonFiniteError(
        f"{os.fspath(source)}: refused: tensor '{key}' holds {nan} NaN and {infinite} infinite value(s) "
        f"({len(bad)} of {len(state)} tensors are not finite). Such a network predicts nothing useful (NaN "
        "probabilities read as 'no lesion' everywhere): the training that wrote it diverged. Use an earlier "
        "checkpoint, or train again (e.g. with a lower learning_rate)"
    )


def check_finite_output(output: torch.Tensor, image: str | os.PathLike) -> None:
    """Refuse network output (logits or probabilities) that holds NaN or infinity.

    Args:
        output: the network's output for ``image``, any shape.
        image: the image it was computed from, named in the message.

    Raises:
        NonFiniteError: ``"<image>: the network's output holds ..."``.
    """
    if output.is_floating_point() and not bool(torch.isfinite(output).all()):
        nan, infinite = _counts(output)
        raise NonFiniteError(
            f"{os.fspath(image)}: the network's output holds {nan} NaN and {infinite} infinite value(s) of "
            f"{output.numel()}, so no mask can be derived from it (NaN would read as 'no lesion'); nothing is "
            "written for this image. The weights may come from a diverged or barely started training, or the "
            "image may be far outside the training data's range"
        )


def check_threshold(threshold: float, source: str = "threshold") -> float:
    """``threshold`` as a float when it is a probability strictly between 0 and 1.

    Args:
        threshold: the probability a pixel must reach to be lesion.
        source: where the value comes from, for the message (an option or a config id).

    Raises:
        ValueError: NaN, or not inside (0, 1): 0 would mark every pixel lesion and 1 none, silently.
    """
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(
            f"{source}: {threshold!r} is not a number; give a probability between 0 and 1, e.g. 0.5"
        ) from None
    if not 0.0 < value < 1.0:  # False for NaN too
        raise ValueError(
            f"{source}: {threshold!r} is not a probability strictly between 0 and 1 (a pixel is lesion where its "
            "probability reaches the threshold, so 0 marks every pixel and 1 none); e.g. 0.5"
        )
    return value


class FiniteCheckpointLoader(WeightsOnlyCheckpointLoader):
    """The bundles' checkpoint loader: MONAI's :class:`~monai.handlers.CheckpointLoader` (``weights_only=True``)
    with the project's errors for a damaged or code-carrying file (:class:`WeightsOnlyCheckpointLoader`), that
    then refuses NaN or infinite weights, naming ``load_path`` and the first bad tensor, before the engine runs.

    Takes the arguments of :class:`~monai.handlers.CheckpointLoader`.

    Raises:
        NonFiniteError: a network in ``load_dict`` holds non-finite weights after loading.
    """

    def __call__(self, engine: Any) -> None:
        super().__call__(engine)
        for name, obj in self.load_dict.items():
            if isinstance(obj, torch.nn.Module):
                state = obj.state_dict()
                # key names as saved: MONAI stores a single object's state dict unwrapped
                prefix = f"{name}." if len(self.load_dict) > 1 else ""
                check_finite_weights({prefix + key: value for key, value in state.items()}, self.load_path)


class RefuseNonFinited(MapTransform):
    """Raise when a prediction holds NaN or infinity, naming the source image (inference postprocessing).

    Args:
        keys: the prediction key(s) to check, e.g. ``"pred"``.
        source_key: the image whose ``filename_or_obj`` names the error.
    """

    def __init__(self, keys: KeysCollection, source_key: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.source_key = source_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = source_filename(d, self.source_key) or "an image"
        for key in self.key_iterator(d):
            value = d[key]
            check_finite_output(value if isinstance(value, torch.Tensor) else torch.as_tensor(value), str(image))
        return d
