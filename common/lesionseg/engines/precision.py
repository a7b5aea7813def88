"""Numerical precision of the bundles' workflows: ``fp32``, ``bf16``, ``fp16`` or ``auto``.

:func:`resolve_precision` turns a setting and a device into a :class:`Precision`, logging which precision
was chosen and why. ``auto`` picks bfloat16 where the device runs it natively: a CPU with AMX or
AVX-512-BF16 (detected at run time, :func:`cpu_features`) or a CUDA GPU of compute capability 8.0 or
more; float16 on older GPUs; float32 on other CPUs. ``fp16`` runs on CUDA only, with a gradient scaler.

:class:`AutocastInferer` runs a network's forward pass under :func:`torch.autocast` on any device and
returns float32 outputs. MONAI's ``SupervisedTrainer`` and ``SupervisedEvaluator`` autocast on CUDA only
(``amp=True``) and compute the loss inside the autocast region; with this inferer the bundles keep MONAI's
``amp`` off (``amp=True`` only to get MONAI's gradient scaler for fp16, with MONAI's own autocast
disabled through ``amp_kwargs``), so the forward pass runs in the chosen precision while losses and
metrics see float32 outputs. The weights stay float32 throughout (autocast casts copies per operation):
checkpoints, resumed states and TorchScript/ONNX exports are the same as in float32 training.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from monai.inferers import Inferer, SimpleInferer

from lesionseg.engines.compiled import CompiledNetworkCache

__all__ = [
    "PRECISIONS",
    "AutocastInferer",
    "CpuFeatures",
    "Precision",
    "cpu_features",
    "resolve_precision",
    "to_float32",
]

logger = logging.getLogger(__name__)

#: the values of the ``precision`` setting
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class CpuFeatures:
    """What this machine's CPU offers for bfloat16.

    Attributes:
        model: the CPU's name (``/proc/cpuinfo``'s ``model name``, else :func:`platform.processor`).
        amx_bf16: AMX tiles with bfloat16 (Intel Sapphire Rapids and later).
        avx512_bf16: the AVX-512 bfloat16 instructions (Intel Cooper Lake and later, AMD Zen 4 and later).
        capability: the vector instruction set PyTorch's kernels were dispatched for
            (:func:`torch.backends.cpu.get_cpu_capability`).
        source: where the flags came from: ``"/proc/cpuinfo"`` or ``"torch"``.
    """

    model: str
    amx_bf16: bool
    avx512_bf16: bool
    capability: str
    source: str

    @property
    def native_bf16(self) -> bool:
        """Whether bfloat16 matrix products run in hardware (AMX or AVX-512-BF16)."""
        return self.amx_bf16 or self.avx512_bf16

    def describe(self) -> str:
        """One line, e.g. ``Intel(R) Xeon(R) ...: AMX-BF16 yes, AVX512-BF16 yes (/proc/cpuinfo; torch kernels
        AVX512)``."""
        return (
            f"{self.model}: AMX-BF16 {'yes' if self.amx_bf16 else 'no'}, "
            f"AVX512-BF16 {'yes' if self.avx512_bf16 else 'no'} ({self.source}; torch kernels {self.capability})"
        )


def _read_cpuinfo() -> tuple[str, set[str] | None] | None:
    """``(model name, x86 flags)`` of the first processor in ``/proc/cpuinfo`` (flags ``None`` where the file
    lists none, e.g. on ARM), or ``None`` without the file."""
    try:
        with open("/proc/cpuinfo") as file:
            text = file.read()
    except OSError:
        return None
    model, flags = "", None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = set(value.split())
        if model and flags is not None:
            break
    return model, flags


def _torch_cpu_check(name: str) -> bool:
    # private helpers of torch.cpu (cpuinfo at run time); absent in some builds
    check = getattr(torch.cpu, name, None)
    try:
        return bool(check()) if check is not None else False
    except Exception:  # a probe, never a reason to fail
        return False


@lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """The CPU's bfloat16 features, detected at run time (cached).

    The kernel's ``/proc/cpuinfo`` flags ``amx_bf16`` and ``avx512_bf16`` are used where they exist (Linux;
    the kernel lists AMX only where it also enabled it); elsewhere PyTorch's own run-time checks
    (``torch.cpu._is_amx_tile_supported``, ``torch.cpu._is_avx512_bf16_supported``).
    """
    try:
        capability = str(torch.backends.cpu.get_cpu_capability())
    except Exception:
        capability = "unknown"
    cpuinfo = _read_cpuinfo()
    if cpuinfo is not None and cpuinfo[1] is not None:
        model, flags = cpuinfo
        return CpuFeatures(
            model=model or platform.processor() or "unknown CPU",
            amx_bf16="amx_bf16" in flags,
            avx512_bf16="avx512_bf16" in flags,
            capability=capability,
            source="/proc/cpuinfo",
        )
    model = (cpuinfo[0] if cpuinfo else "") or platform.processor() or platform.machine() or "unknown CPU"
    return CpuFeatures(
        model=model,
        amx_bf16=_torch_cpu_check("_is_amx_tile_supported"),
        avx512_bf16=_torch_cpu_check("_is_avx512_bf16_supported"),
        capability=capability,
        source="torch",
    )


@dataclass(frozen=True)
class Precision:
    """A resolved precision: which dtype the forward pass runs in, on which device type, and why.

    Attributes:
        name: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        device_type: ``"cpu"``, ``"cuda"``... (the ``device_type`` of :class:`torch.autocast`).
        requested: the setting it was resolved from (``"auto"``, ``"bf16"``...).
        reason: why this precision, for the log.
    """

    name: str
    device_type: str
    requested: str = ""
    reason: str = ""

    def __post_init__(self) -> None:
        if self.name not in _DTYPES:
            raise ValueError(f"precision name must be one of {sorted(_DTYPES)}, got {self.name!r}")

    @property
    def dtype(self) -> torch.dtype:
        """The autocast dtype (float32: no autocast)."""
        return _DTYPES[self.name]

    @property
    def enabled(self) -> bool:
        """Whether the forward pass runs under autocast (bf16, fp16)."""
        return self.name != "fp32"

    @property
    def grad_scaling(self) -> bool:
        """Whether training needs a gradient scaler: fp16, whose small gradients underflow otherwise."""
        return self.name == "fp16"

    def autocast(self, device_type: str | None = None) -> torch.autocast:
        """The :class:`torch.autocast` context of this precision; for fp32 one that turns autocast off, so
        that fp32 means fp32 also inside another autocast region."""
        device_type = device_type or self.device_type
        if not self.enabled:
            return torch.autocast(device_type, enabled=False)
        return torch.autocast(device_type, dtype=self.dtype)

    def __str__(self) -> str:
        return self.name


def _check_name(precision: Any) -> str:
    name = str(precision).strip().lower() if isinstance(precision, str) else None
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return name


def resolve_precision(precision: str | Precision, device: str | torch.device = "cpu") -> Precision:
    """The precision that ``precision`` means on ``device``, logged with the reason.

    Args:
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"auto"`` (case-insensitive); a :class:`Precision`
            is re-resolved from the setting it came from when its device type differs, else returned.
        device: where the network runs, e.g. ``"cpu"``, ``"cuda:1"`` or a :class:`torch.device`.

    ``auto``: bf16 on a CPU with AMX or AVX-512-BF16 and on CUDA GPUs of compute capability ≥ 8.0; fp16 on
    older CUDA GPUs; fp32 elsewhere. An explicit ``bf16`` where it is not native runs (emulated, slower)
    with a warning.

    Raises:
        ValueError: an unknown setting, or ``fp16`` on a device other than CUDA.
    """
    device = torch.device(device)
    if isinstance(precision, Precision):
        if precision.device_type == device.type:
            return precision
        precision = precision.requested or precision.name
    requested = _check_name(precision)
    name, reason = requested, "as set"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        gpu = f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"
        native = major >= 8
        if requested == "auto":
            name = "bf16" if native else "fp16"
            reason = f"{gpu}: " + ("bfloat16 is native from compute capability 8.0" if native else
                                   "no native bfloat16 below compute capability 8.0; float16 with a gradient scaler")
        elif requested == "bf16" and not native:
            reason = f"as set, but {gpu} has no native bfloat16 (slower than fp16 or fp32 here)"
            logger.warning("precision bf16 on %s: no native bfloat16 below compute capability 8.0; expect it slow", gpu)
        else:
            reason = f"as set, on {gpu}"
    elif device.type == "cpu":
        if requested == "fp16":
            raise ValueError(
                "precision 'fp16' runs on CUDA only (float16 with a gradient scaler); on the CPU use 'bf16' "
                "(native with AMX or AVX-512-BF16), 'fp32' or 'auto'"
            )
        features = cpu_features()
        if requested == "auto":
            name = "bf16" if features.native_bf16 else "fp32"
            reason = features.describe() + (
                ": bfloat16 is native" if features.native_bf16 else ": no native bfloat16, float32"
            )
        elif requested == "bf16" and not features.native_bf16:
            reason = f"as set, but {features.describe()}: bfloat16 is emulated (slower than fp32 here)"
            logger.warning("precision bf16 on a CPU without AMX or AVX-512-BF16 (%s): expect it slow", features.model)
        else:
            reason = f"as set, on {features.describe()}"
    else:
        if requested == "fp16":
            raise ValueError(f"precision 'fp16' runs on CUDA only (float16 with a gradient scaler); device {device}")
        if requested == "auto":
            name, reason = "fp32", f"no bfloat16 check for device type {device.type!r}: float32"
    resolved = Precision(name=name, device_type=device.type, requested=requested, reason=reason)
    logger.info("precision %s (setting %r) on %s: %s", name, requested, device, reason)
    return resolved


def to_float32(output: Any) -> Any:
    """``output`` with every floating-point tensor in it (also inside tuples, lists and dicts) as float32;
    float32 tensors are returned as they are (MetaTensors stay MetaTensors)."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() and output.dtype != torch.float32 else output
    if isinstance(output, tuple):
        return tuple(to_float32(o) for o in output)
    if isinstance(output, list):
        return [to_float32(o) for o in output]
    if isinstance(output, Mapping):
        return {key: to_float32(value) for key, value in output.items()}
    return output


class AutocastInferer(Inferer):
    """Run another inferer under :func:`torch.autocast` in a precision, on any device, and return float32.

    The network's weights stay float32 (autocast casts per operation); the outputs, a tensor or a
    tuple/list/dict of tensors, are cast to float32, so that the loss, post-processing and metrics computed
    from them are float32 computations. The autocast device type is that of the inputs: a precision
    resolved for another device type (MONAI Label changes the device per request) is resolved again
    from its setting.

    Args:
        precision: a :class:`Precision` (:func:`resolve_precision`), or a setting (``"fp32"``, ``"bf16"``,
            ``"fp16"``, ``"auto"``) resolved for the inputs' device at the first call.
        inferer: the inferer to run; ``None``: :class:`monai.inferers.SimpleInferer`.
        compile: run the network compiled by :func:`torch.compile` (:mod:`lesionseg.engines.compiled`),
            compiled at the first call; for long batch inference of one image size.

    Example:
        >>> import torch
        >>> net = torch.nn.Conv2d(1, 1, 3, padding=1)
        >>> inferer = AutocastInferer(Precision("bf16", "cpu"))
        >>> out = inferer(torch.rand(1, 1, 8, 8), net)
        >>> out.dtype, net.weight.dtype
        (torch.float32, torch.float32)
    """

    def __init__(
        self,
        precision: Precision | str = "fp32",
        inferer: Inferer | Callable[..., Any] | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(precision, Precision):
            _check_name(precision)
        self.precision = precision
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.compiled = CompiledNetworkCache() if compile else None

    def precision_for(self, device: torch.device) -> Precision:
        """The precision on ``device`` (resolved once per device type)."""
        if not isinstance(self.precision, Precision) or self.precision.device_type != device.type:
            self.precision = resolve_precision(self.precision, device)
        return self.precision

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """
        Args:
            inputs: the network's input batch, e.g. (B, C, H, W).
            network: the network (or any callable the wrapped inferer accepts).
            args, kwargs: passed on to the wrapped inferer.
        """
        device = inputs.device if isinstance(inputs, torch.Tensor) else torch.device("cpu")
        if self.compiled is not None:
            network = self.compiled(network, device.type)
        with self.precision_for(device).autocast(device.type):
            outputs = self.inferer(inputs, network, *args, **kwargs)
        return to_float32(outputs)
