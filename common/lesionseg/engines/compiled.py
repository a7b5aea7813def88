"""Compiled inference: a network's forward pass through :func:`torch.compile` (TorchInductor).

Compiling pays once, when the first batch arrives (DC-Net at 256²: about a minute on 2 CPU threads), and
then runs fused kernels (``benchmarks/compile_speed.py``). It is worth it for long batch inference of one
image size, e.g. ``lesionseg predict --compile`` over thousands of images, and not for a few images or
for an interactive server. Only the forward pass is compiled, never the training step: the weights, the
checkpoints (``model.pt`` stays a plain state dict) and the exports are the same with or without it.
The outputs match eager ones within the precision's rounding, not bit for bit (the fused kernels sum
in another order).

On a CPU, TorchInductor generates C++ and needs a C++ compiler (``g++`` or ``clang++``, or ``$CXX``);
:func:`compile_for_inference` says so plainly when there is none.
"""

from __future__ import annotations

import os
import shutil
import weakref
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["CompilerMissingError", "compile_for_inference", "CompiledNetworkCache"]

_CXX = ("g++", "c++", "clang++")


class CompilerMissingError(RuntimeError):
    """Compiled inference on a CPU without a C++ compiler."""


def _check_cxx(device_type: str) -> None:
    if device_type != "cpu":
        return
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else list(_CXX)
    if not any(shutil.which(name) for name in candidates):
        raise CompilerMissingError(
            f"compiled inference on a CPU needs a C++ compiler (looked for {', '.join(candidates)}): install one "
            "(e.g. `apt install g++`) or run without compile"
        )


def compile_for_inference(network: torch.nn.Module, device_type: str = "cpu") -> Callable[..., Any]:
    """``network``'s forward pass compiled by TorchInductor for a fixed input shape.

    The returned callable shares ``network``'s parameters (no copy): loading new weights into ``network``
    afterwards is seen by it. A change of input shape, dtype or of ``network.training`` compiles again.

    Args:
        network: the module to compile; it is not modified.
        device_type: ``"cpu"`` or ``"cuda"``, where it will run (a CPU needs a C++ compiler).

    Raises:
        CompilerMissingError: on a CPU without a C++ compiler.

    Example:
        >>> import torch
        >>> net = torch.nn.Conv2d(1, 1, 3, padding=1).eval()
        >>> forward = compile_for_inference(net)
        >>> x = torch.rand(1, 1, 8, 8)
        >>> with torch.inference_mode():
        ...     torch.allclose(forward(x), net(x), atol=1e-6)
        True
    """
    _check_cxx(device_type)
    # dynamic=False: one image size per run (the bundles resize), so no symbolic shapes and their guards
    return torch.compile(network, dynamic=False)


class CompiledNetworkCache:
    """The compiled forward pass of whichever network is passed, compiled once per network object.

    An inferer receives the network at every call (MONAI's ``SupervisedEvaluator``); this keeps the compiled
    version of the last network only (a new network object replaces it, so the old one can be freed), and
    recognises that network by a weak reference, which cannot match a later object at a reused address.
    """

    def __init__(self) -> None:
        self._network: weakref.ref[torch.nn.Module] | None = None
        self._compiled: Callable[..., Any] | None = None

    def __call__(self, network: Callable[..., Any], device_type: str) -> Callable[..., Any]:
        """The compiled ``network`` (``network`` itself when it is not a module, e.g. a TorchScript function)."""
        if not isinstance(network, torch.nn.Module):
            return network
        if self._network is None or self._network() is not network:
            self._compiled = compile_for_inference(network, device_type)
            self._network = weakref.ref(network)
        return self._compiled
