"""TorchScript and ONNX files of a segmentation network, with dynamic batch, height and width.

Both go through MONAI's converters (:func:`monai.networks.utils.convert_to_torchscript`,
:func:`monai.networks.utils.convert_to_onnx`); each converted model is then checked against the eager network
on a random input (:func:`check_close`: the largest difference at most ``tolerance`` times the largest
eager value, or ``tolerance`` where that is below 1; logits can be large, so a plain relative tolerance per
element would fail on values near zero).

- TorchScript: ``torch.jit.script`` (no tracing): the scripted model keeps the networks' input checks and
  takes any input size they accept. This is also what ``python -m monai.bundle ckpt_export`` does.
- ONNX: PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``), which records the
  shape arithmetic of DC-Net's context pooling as graph operations, so one file serves every image size.
  The newer ``torch.export`` route (``dynamo=True``, PyTorch's default since 2.9) took 85 s for a narrow
  DC-Net on 2 CPU cores (the TorchScript-based exporter 12 s) and specialises TaiChiNet's batch size, so it
  is not used here. The recorded graph has no input checks: an ONNX file must be given H and W divisible by
  16 (DC-Net: 32 or more), which the TorchScript file checks itself.

Both export the evaluation-mode network: one input ``image`` (B, C, H, W) and one output ``pred``, the lesion
logits (B, out_channels, H, W).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
from monai.networks.utils import convert_to_onnx, convert_to_torchscript

__all__ = ["DYNAMIC_AXES", "check_close", "export_onnx", "export_torchscript", "onnx_session"]

logger = logging.getLogger(__name__)

#: the ONNX axes left free: batch, height and width of the input image and of the output logits
DYNAMIC_AXES = {"image": {0: "batch", 2: "height", 3: "width"}, "pred": {0: "batch", 2: "height", 3: "width"}}


def check_close(expected, actual, tolerance: float = 1e-4, what: str = "exported model") -> float:
    """Raise ``AssertionError`` unless ``max |actual - expected| <= tolerance * max(1, max |expected|)``.

    Args:
        expected: the eager network's output (tensor or array).
        actual: the converted model's output, of the same shape.
        tolerance: the allowed difference, relative to the output's scale.
        what: names the converted model in the error.

    Returns:
        the largest absolute difference.
    """
    expected = torch.as_tensor(expected).detach().float().cpu()
    actual = torch.as_tensor(actual).detach().float().cpu()
    if expected.shape != actual.shape:
        raise AssertionError(f"{what}: output shape {tuple(actual.shape)}, eager PyTorch {tuple(expected.shape)}")
    if not torch.isfinite(expected).all():
        raise AssertionError(f"{what}: the eager output is not finite; calibrate or load the network first")
    difference = float((actual - expected).abs().max())
    scale = max(1.0, float(expected.abs().max()))
    if not difference <= tolerance * scale:
        raise AssertionError(
            f"{what}: differs from eager PyTorch by up to {difference:.3g} (allowed {tolerance:g} x {scale:.3g})"
        )
    return difference


def onnx_session(filename: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session for ``filename``, all graph optimisations on; ``threads`` intra-op threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(filename), options, providers=["CPUExecutionProvider"])


def _example(network: nn.Module, image_size: Sequence[int], in_channels: int | None) -> torch.Tensor:
    channels = in_channels if in_channels is not None else int(getattr(network, "in_channels", 1))
    return torch.rand(1, channels, *(int(s) for s in image_size))


def export_torchscript(
    network: nn.Module, filename: str | Path, image_size: Sequence[int] = (64, 64), in_channels: int | None = None
) -> torch.jit.ScriptModule:
    """Script ``network`` in evaluation mode, check it on a random ``image_size`` input and save it.

    Args:
        network: a ``DCNet`` or ``TaiChiNet`` (any scriptable module taking one image tensor).
        filename: the ``.ts`` file to write.
        image_size: (H, W) of the random input the scripted model is checked on.
        in_channels: image channels of that input; default: ``network.in_channels`` or 1.

    Returns:
        the scripted module (also saved to ``filename``), in evaluation mode.
    """
    network = network.eval()
    example = _example(network, image_size, in_channels)
    with warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.export, which does not produce TorchScript
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+. is deprecated")
        scripted = convert_to_torchscript(network, filename_or_obj=str(filename))
    with torch.no_grad():
        check_close(network(example), scripted(example), what=f"TorchScript {filename}")
    logger.info("wrote TorchScript %s", filename)
    return scripted


def export_onnx(
    network: nn.Module,
    filename: str | Path,
    image_size: Sequence[int] = (64, 64),
    in_channels: int | None = None,
    opset_version: int = 17,
):
    """Export ``network`` in evaluation mode to ONNX with free batch, height and width (:data:`DYNAMIC_AXES`).

    The file is checked with ONNX Runtime against the eager network on a random ``image_size`` input
    (:func:`check_close`, tolerance 1e-4). Needs the ``onnx`` and ``onnxruntime`` packages
    (``pip install "lesionseg[onnx]"``).

    Args:
        network: a ``DCNet`` or ``TaiChiNet``.
        filename: the ``.onnx`` file to write.
        image_size: (H, W) of the example input the graph is recorded with and checked on.
        in_channels: image channels of that input; default: ``network.in_channels`` or 1.
        opset_version: the ONNX operator set.

    Returns:
        the ``onnx.ModelProto`` written to ``filename``.
    """
    network = network.eval()
    example = _example(network, image_size, in_channels)
    with warnings.catch_warnings():
        # the TorchScript-based exporter is deprecated in favour of dynamo=True (see the module docstring)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+. is deprecated")
        # the input checks are recorded for the example's shape only; they guard, they compute nothing
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        model = convert_to_onnx(
            network,
            inputs=[example],
            input_names=["image"],
            output_names=["pred"],
            dynamic_axes=DYNAMIC_AXES,
            opset_version=opset_version,
            filename=str(filename),
            use_trace=True,
            dynamo=False,
        )
    session = onnx_session(filename)
    with torch.no_grad():
        expected = network(example)
    check_close(expected, session.run(None, {"image": example.numpy()})[0], what=f"ONNX {filename}")
    logger.info("wrote ONNX %s", filename)
    return model
