"""Selecting the segmentation map from a network's training-mode outputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import SimpleInferer


def primary_output(output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Return the lesion map of a network output.

    DC-Net and TaiChiNet return one tensor in eval mode and a tuple in training mode whose first element is
    the lesion map (DC-Net adds its two saliency maps, TaiChiNet the negative path). Post-processing and
    training metrics need only the lesion map; this picks it in both modes.

    Example:
        >>> import torch
        >>> lesion, extra = torch.zeros(1, 4, 4), torch.ones(1, 4, 4)
        >>> primary_output((lesion, extra)) is lesion
        True
        >>> primary_output(lesion) is lesion
        True
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Sequence) and len(output) > 0 and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"expected a tensor or a sequence of tensors, got {type(output).__name__}")


class PrimaryOutputInferer(SimpleInferer):
    """:class:`monai.inferers.SimpleInferer` that returns the lesion map of the network's output.

    In evaluation mode DC-Net and TaiChiNet return one tensor and this inferer is ``SimpleInferer``. In
    training mode they return a tuple whose first element is the lesion map; tools that run inference on a
    network in training mode to keep dropout active, such as MONAI Label's epistemic (Monte Carlo dropout)
    scoring, which calls ``net.train()``, then still get one (B, C, H, W) tensor.

    Example:
        >>> import torch
        >>> net = lambda x: (x + 1, x - 1)
        >>> PrimaryOutputInferer()(torch.zeros(1, 1, 2, 2), net).sum().item()
        4.0
    """

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        return primary_output(super().__call__(inputs, network, *args, **kwargs))
