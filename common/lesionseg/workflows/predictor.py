"""A trained network with its bundle's preprocessing, ready to segment one 2D slice at a time.

The network comes from a bundle folder (``network_def`` of ``configs/inference.yaml``, weights from
``models/model.pt`` or another checkpoint) or from an exported TorchScript file (e.g. MONAI's
``ckpt_export``). The preprocessing is the bundle's own ``preprocessing`` Compose after its loader
(``Resized`` to ``image_size``, ``ScaleIntensityd``...), and the probability map is brought back to the
source size with MONAI's ``Invertd``, as the bundle's inference workflow does.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.bundle.reference_resolver import ReferenceResolver
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, LoadImaged

from lesionseg.data.transforms import LoadUltrasoundd, ultrasound_tensor
from lesionseg.engines.checkpoint import CheckpointError, check_evaluation_settings, load_checkpoint, network_options
from lesionseg.engines.compiled import CompilerMissingError, compile_for_inference
from lesionseg.engines.finite import NonFiniteError, check_finite_output, check_finite_weights
from lesionseg.engines.precision import Precision, resolve_precision
from lesionseg.workflows.bundle import find_config

logger = logging.getLogger(__name__)

__all__ = ["ModelError", "NonFiniteOutputError", "Predictor", "is_torchscript", "load_predictor", "train_command"]

#: the TorchScript extra file where MONAI's ``ckpt_export --config_file configs/inference.yaml`` keeps the config
EMBEDDED_CONFIG = "inference.json"

#: the config ids :func:`load_predictor` reads (:func:`_ids_read` says which for a given model): ``--override``
#: can change these and the ids they refer to (``@image_size`` in ``preprocessing``), and is refused for any
#: other id, whose new value nothing would read
READ_IDS = (
    "network_def",
    "ckpt_dir",
    "image_key",
    "preprocessing",
    "image_size",
    "precision",
    "check_training_settings",
)

# config ids whose setting predict takes from its own option instead
_OPTION_FOR = {"threshold": "--threshold", "precision": "--precision", "device": "--device", "compile": "--compile"}


class ModelError(RuntimeError):
    """The model cannot be set up (no weights, weights that do not fit or are not finite, a bad bundle); the
    message says why and what to do."""


class NonFiniteOutputError(ModelError):
    """The network gave NaN or infinite output for one image; the message names the image."""


def train_command(bundle: Path) -> str:
    """The command that trains ``bundle`` and writes its ``models/model.pt``."""
    return (
        f"cd {bundle} && python -m monai.bundle run --config_file configs/train.yaml "
        "--dataset_dir /path/to/your/dataset"
    )


def is_torchscript(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``), as opposed to a state-dict checkpoint."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())


class Predictor:
    """Segment (H, W) slices of any size with a network and a bundle's preprocessing.

    Args:
        network: maps a (1, C, h, w) batch to lesion logits (1, K, h, w), or a tuple whose first element they
            are. K = 1: sigmoid; K > 1: softmax, channel 1 being the lesion.
        preprocessing: the bundle's transforms after its loader, applied to ``{image_key: (1, H, W)}``.
        image_key: the key the preprocessing transforms.
        device: where the network runs.
        amp: run the network under autocast in the device's default low precision (``precision`` replaces it).
        precision: the precision of the forward pass (:func:`lesionseg.engines.resolve_precision`); the
            probabilities are computed in float32 from its outputs.
        compile: run the forward pass compiled by :func:`torch.compile`
            (:func:`lesionseg.engines.compile_for_inference`): a compile at the first image, then faster images;
            for long runs over many images.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        preprocessing: Compose,
        image_key: str = "image",
        device: torch.device | str = "cpu",
        amp: bool = False,
        precision: Precision | None = None,
        compile: bool = False,
    ) -> None:
        self.network = network.eval()
        self.device = torch.device(device)
        self._forward = compile_for_inference(self.network, self.device.type) if compile else self.network
        self.preprocessing = preprocessing
        self.image_key = image_key
        self.amp = amp
        self.precision = precision
        self._invert = Invertd(
            keys="pred", transform=preprocessing, orig_keys=image_key, nearest_interp=False, to_tensor=True
        )

    def __call__(self, image: np.ndarray, filename: str | os.PathLike = "") -> np.ndarray:
        """The lesion probability of every pixel: float32 (H, W) in [0, 1] for a (H, W) image.

        Raises:
            NonFiniteOutputError: naming ``filename``, when the network's output holds NaN or infinity
                (which would otherwise read as "no lesion").
        """
        data = self.preprocessing({self.image_key: ultrasound_tensor(image, filename)})
        batch = data[self.image_key].as_tensor()[None].to(self.device)
        if self.precision is not None:
            autocast = self.precision.autocast(self.device.type)
        else:
            autocast = torch.autocast(self.device.type, enabled=self.amp)
        with torch.inference_mode(), autocast:
            logits = self._forward(batch)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        logits = logits.float()
        if logits.ndim != 4 or logits.shape[0] != 1:
            raise ModelError(f"the network returned shape {tuple(logits.shape)}, expected (1, K, h, w) logits")
        try:
            check_finite_output(logits, filename or "an image")
        except NonFiniteError as error:
            raise NonFiniteOutputError(str(error)) from None
        probability = torch.sigmoid(logits[0, :1]) if logits.shape[1] == 1 else torch.softmax(logits[0], 0)[1:2]
        # Invertd takes the transform record of `image_key` for a MetaTensor prediction
        data["pred"] = MetaTensor(probability.cpu())
        restored = self._invert(data)["pred"]
        restored = np.asarray(restored.detach().cpu().numpy() if isinstance(restored, torch.Tensor) else restored)
        return np.clip(restored[0], 0.0, 1.0).astype(np.float32)


def _strip_loader(preprocessing: Any, source: str) -> Compose:
    transforms = list(preprocessing.transforms) if isinstance(preprocessing, Compose) else [preprocessing]
    if transforms and isinstance(transforms[0], (LoadUltrasoundd, LoadImaged)):
        transforms = transforms[1:]
    else:
        raise ModelError(f"{source}: 'preprocessing' does not start with a loader (LoadUltrasoundd or LoadImaged)")
    return Compose(transforms)


def _default_preprocessing(image_key: str, image_size: Sequence[int]) -> Compose:
    """The bundles' inference preprocessing after the loader, for configs that have none."""
    from monai.transforms import EnsureTyped, Resized, ScaleIntensityd

    return Compose(
        [
            Resized(keys=image_key, spatial_size=list(image_size), mode="area"),
            ScaleIntensityd(keys=image_key, minv=0.0, maxv=1.0),
            EnsureTyped(keys=image_key, dtype=torch.float32),
        ]
    )


def _preprocessing(parser: ConfigParser, source: str) -> tuple[Compose, str]:
    image_key = parser.get_parsed_content("image_key") if "image_key" in parser else "image"
    if "preprocessing" in parser:
        return _strip_loader(_parse(parser, "preprocessing", source), source), image_key
    if "image_size" not in parser:
        raise ModelError(f"{source}: the config has neither 'preprocessing' nor 'image_size'")
    logger.warning("%s has no 'preprocessing': resizing to image_size and scaling to [0, 1]", source)
    return _default_preprocessing(image_key, _parse(parser, "image_size", source)), image_key


def _parse(parser: ConfigParser, key: str, source: str | Path) -> Any:
    """``parser.get_parsed_content(key)``; a config that cannot be built (e.g. a misspelt override) is a
    :class:`ModelError` naming the config and the id."""
    try:
        return parser.get_parsed_content(key)
    except Exception as error:
        raise ModelError(f"{source}: cannot build '{key}' ({type(error).__name__}: {str(error)[:600]})") from error


def _bundle_parser(bundle: Path, overrides: Mapping[str, Any], **used: bool) -> tuple[ConfigParser, Path]:
    """The bundle's inference (else train) config with ``overrides`` applied (:func:`_apply_overrides`, which
    takes ``used``)."""
    try:
        config_file = find_config(bundle, "inference")
    except FileNotFoundError:
        config_file = find_config(bundle, "train")
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["bundle_root"] = str(bundle)
    _apply_overrides(parser, overrides, config_file, **used)
    return parser, config_file


def _ids_read(parser: ConfigParser, torchscript: bool, checkpoint: bool, precision: bool) -> list[str]:
    """The ids of :data:`READ_IDS` that :func:`load_predictor` reads from ``parser``.

    Args:
        torchscript: the network is a TorchScript model: ``network_def``, ``ckpt_dir`` and
            ``check_training_settings`` (there is no training state to check against) are not read.
        checkpoint: the weights are given: ``ckpt_dir`` is not read.
        precision: the precision is given: the config's ``precision`` is not read.
    """
    # _preprocessing reads image_size only for a config without preprocessing
    skipped = {"image_size" if "preprocessing" in parser else "preprocessing"}
    skipped |= {"network_def", "ckpt_dir", "check_training_settings"} if torchscript else set()
    skipped |= {"ckpt_dir"} if checkpoint else set()
    skipped |= {"precision"} if precision else set()
    return [config_id for config_id in READ_IDS if config_id not in skipped and config_id in parser]


def _referred_ids(parser: ConfigParser, ids: list[str]) -> list[str]:
    """The top-level ids that ``ids`` refer to (``@image_size``, ``$...(@bundle_root)``), and theirs, in order."""
    found, waiting = list(ids), list(ids)
    while waiting:
        config_id = waiting.pop(0)
        for ref in ReferenceResolver.find_refs_in_config(parser[config_id], config_id):
            top = ReferenceResolver.split_id(ref)[0]
            if top and top not in found and top in parser.get():
                found.append(top)
                waiting.append(top)
    return found[len(ids) :]


def _apply_overrides(
    parser: ConfigParser,
    overrides: Mapping[str, Any],
    source: str | Path,
    torchscript: bool = False,
    checkpoint: bool = False,
    precision: bool = False,
) -> None:
    """Set ``overrides`` in ``parser``.

    Args:
        torchscript, checkpoint, precision: what :func:`_ids_read` takes.

    Raises:
        ModelError: naming ``source`` and the override, for an id the config lacks, or one the predictor does
            not read (which would change nothing): the message lists the ids that can be changed.
    """
    for key, value in overrides.items():
        if ReferenceResolver.split_id(key)[0] not in parser.get():
            raise ModelError(f"{source}: --override {key}: no such id in the config")
        parser[key] = value
    read = _ids_read(parser, torchscript, checkpoint, precision)
    referred = _referred_ids(parser, read)
    for key in overrides:
        config_id = ReferenceResolver.split_id(key)[0]
        if config_id in read or config_id in referred:
            continue
        if torchscript and config_id in ("network_def", "ckpt_dir"):
            option = "; a TorchScript --model brings its own network and weights"
        elif checkpoint and config_id == "ckpt_dir":
            option = "; --checkpoint gives the weights"
        else:
            option = f"; {_OPTION_FOR[config_id]} sets it" if config_id in _OPTION_FOR else ""
        changeable = ", ".join(read) + (f" and the ids they refer to ({', '.join(referred)})" if referred else "")
        raise ModelError(
            f"{source}: --override {key}: predict does not read '{config_id}'{option}. The ids --override can change "
            f"here: {changeable}"
        )


def _read_state_dict(checkpoint: Path) -> Mapping[str, torch.Tensor]:
    if is_torchscript(checkpoint):
        raise ModelError(f"{checkpoint}: is a TorchScript model, not a checkpoint; pass it with --model")
    try:
        state = load_checkpoint(checkpoint, map_location="cpu")
    except CheckpointError as error:  # names the file; refuses pickled code without PyTorch's weights_only advice
        raise ModelError(str(error)) from None
    # MONAI's CheckpointSaver writes the network's state dict, or {"model": state dict, ...} with several objects
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{checkpoint}: holds no network state dict (expected the weights, or a 'model' entry)")
    _check_finite(state, checkpoint)
    return state


def _check_finite(state: Mapping[str, torch.Tensor], source: str | os.PathLike) -> None:
    try:
        check_finite_weights(state, source)
    except NonFiniteError as error:
        raise ModelError(str(error)) from None


def _load_weights(network: torch.nn.Module, checkpoint: Path, config_file: Path) -> None:
    state = _read_state_dict(checkpoint)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        detail = str(error).split("\n\t", 1)[-1][:600]
        raise ModelError(
            f"{checkpoint}: the weights do not fit the network of {config_file} ({detail}); "
            "pass the network_def overrides the model was trained with, e.g. "
            "--override 'network_def#features=[16,32,64,128,256]'"
        ) from None


def _load_torchscript(model: Path, device: torch.device) -> tuple[torch.nn.Module, dict[str, str]]:
    """The TorchScript network of ``model`` and its embedded inference config (``""`` when absent).

    Not ``monai.data.load_net_with_metadata``: it fails with a bare ``JSONDecodeError`` on a file saved
    without MONAI's metadata (plain ``torch.jit.save``), which needs none here.
    """
    extra = {EMBEDDED_CONFIG: ""}
    try:
        network = torch.jit.load(str(model), map_location=device, _extra_files=extra)
    except Exception as error:  # RuntimeError for damaged archives or ops this PyTorch lacks
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ModelError(f"{model}: not a loadable TorchScript model ({type(error).__name__}: {first_line})") from error
    return network, dict(extra)


def _resolve_device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda: no CUDA device is available here (use --device cpu)")
    return device


def _resolve_precision(
    precision: str | None, parser: ConfigParser, source: str | Path, device: torch.device
) -> Precision:
    """``precision``, else the config's ``precision`` setting, else fp32, resolved for ``device``."""
    where = "--precision"
    if precision is None and "precision" in parser:
        precision, where = _parse(parser, "precision", source), f"{source}: precision"
    elif precision is None:
        precision = "fp32"
    try:
        return resolve_precision(precision, device)
    except ValueError as error:
        raise ModelError(f"{where}: {error}") from None


def _check_trained_settings(parser: ConfigParser, weights: Path, config_file: Path) -> None:
    """Refuse weights whose run (``training_state.pt`` beside them) trained at another ``image_size`` or with
    other network options than ``config_file`` runs them with: they would load and segment, worse, with no
    error (:func:`lesionseg.engines.checkpoint.check_evaluation_settings`)."""
    options = network_options(parser.get("network_def"))
    for option, value in options.items():  # an option given as a reference or expression, by its value
        if isinstance(value, str) and value.startswith(("@", "$", "%")):
            options[option] = _parse(parser, f"network_def#{option}", config_file)
    settings: dict[str, Any] = {"network_def": options}
    if "image_size" in parser:
        settings["image_size"] = _parse(parser, "image_size", config_file)
    fix = (
        "Predict with the values it was trained with: --override 'image_size=[H, W]' (network_def#OPTION=VALUE), "
        "or on purpose under these with --override check_training_settings=false"
    )
    enabled = _parse(parser, "check_training_settings", config_file) if "check_training_settings" in parser else True
    try:
        check_evaluation_settings(weights.parent, settings, eval_section="all", enabled=enabled, fix=fix)
    except (CheckpointError, ValueError) as error:  # ValueError: check_training_settings is not a boolean
        raise ModelError(f"{config_file}: {error}" if isinstance(error, ValueError) else str(error)) from None


def load_predictor(
    bundle: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    model: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    device: str | None = None,
    precision: str | None = None,
    compile: bool = False,
) -> Predictor:
    """Set up a :class:`Predictor` from a bundle, a checkpoint and/or an exported TorchScript model.

    Args:
        bundle: a bundle folder: its ``configs/inference.yaml`` (or ``train.yaml``) gives ``network_def``,
            ``image_key`` and ``preprocessing``. A TorchScript file here is taken as ``model``.
        checkpoint: weights for the bundle's network instead of ``<ckpt_dir>/model.pt`` (the bundle's
            ``models/model.pt``); a state dict, or a dict with a ``model`` entry, as MONAI's CheckpointSaver
            writes them. Loaded with ``weights_only=True``.
        model: a TorchScript network. Its preprocessing comes from ``bundle`` when given, else from the
            config the file carries (``inference.json``, as ``ckpt_export --config_file`` embeds it).
        overrides: config ids and values applied before parsing, e.g. ``{"network_def#features": [...]}``; only
            ids it reads (:data:`READ_IDS`, those they refer to), refused otherwise.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; by default CUDA when there is one.
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` (CUDA) or ``"auto"``; by default the config's
            ``precision`` setting, else fp32.
        compile: compile the bundle's network with :func:`torch.compile` (not for a TorchScript ``model``).

    Raises:
        ModelError: no weights (the message gives the training command), weights that do not fit or hold NaN
            or infinity (the message names the file and the first bad tensor), a missing or unusable config, or
            an unavailable device or precision.
    """
    overrides = dict(overrides or {})
    if bundle is not None and Path(bundle).is_file():
        if model is not None:
            raise ModelError(f"{bundle}: --bundle is a file and --model is given too; pass the TorchScript file once")
        bundle, model = None, bundle
    if bundle is None and model is None:
        raise ModelError("give a bundle folder (--bundle DIR) or an exported TorchScript model (--model FILE)")
    if model is not None and checkpoint is not None:
        raise ModelError("--checkpoint gives weights for a bundle's network; a TorchScript --model has its own")
    if model is not None and compile:
        raise ModelError(f"{model}: --compile compiles a bundle's network; a TorchScript --model is compiled already")
    torch_device = _resolve_device(device)

    if model is not None:
        model = Path(model)
        if not model.is_file():
            raise ModelError(f"{model}: TorchScript model not found")
        if not is_torchscript(model):
            raise ModelError(
                f"{model}: not a TorchScript model; weights for a bundle go with --bundle DIR --checkpoint"
            )
        network, extra = _load_torchscript(model, torch_device)
        _check_finite(network.state_dict(), model)
        used = {"torchscript": True, "precision": precision is not None}
        if bundle is not None:
            parser, source = _bundle_parser(Path(bundle).resolve(), overrides, **used)
        elif extra.get(EMBEDDED_CONFIG):
            parser = ConfigParser(json.loads(extra[EMBEDDED_CONFIG]))
            source = Path(f"{model}::{EMBEDDED_CONFIG}")
            _apply_overrides(parser, overrides, source, **used)
        else:
            raise ModelError(
                f"{model}: carries no inference config; pass the bundle it came from with --bundle DIR, or "
                "export it with ckpt_export --config_file configs/inference.yaml"
            )
        preprocessing, image_key = _preprocessing(parser, str(source))
        logger.info("TorchScript model %s, preprocessing from %s", model, source)
        resolved = _resolve_precision(precision, parser, source, torch_device)
        return Predictor(network.to(torch_device), preprocessing, image_key, torch_device, precision=resolved)

    bundle = Path(bundle).resolve()
    if not bundle.is_dir():
        raise ModelError(f"{bundle}: bundle folder not found")
    parser, config_file = _bundle_parser(
        bundle, overrides, checkpoint=checkpoint is not None, precision=precision is not None
    )
    if checkpoint is None:
        ckpt_dir = parser.get_parsed_content("ckpt_dir") if "ckpt_dir" in parser else bundle / "models"
        weights = Path(ckpt_dir) / "model.pt"
        if not weights.is_file():
            raise ModelError(
                f"{bundle.name} has no trained weights: {weights} not found. Train the bundle first "
                f"({train_command(bundle)}; it writes models/model.pt), or pass weights trained elsewhere "
                "with --checkpoint FILE"
            )
    else:
        weights = Path(checkpoint)
        if not weights.is_file():
            raise ModelError(f"{weights}: checkpoint not found")
    if "network_def" not in parser:
        raise ModelError(f"{config_file}: no 'network_def' to build the network from")
    network = _parse(parser, "network_def", config_file)
    _load_weights(network, weights, config_file)
    _check_trained_settings(parser, weights, config_file)
    preprocessing, image_key = _preprocessing(parser, str(config_file))
    logger.info("%s with weights %s on %s", type(network).__name__, weights, torch_device)
    resolved = _resolve_precision(precision, parser, config_file, torch_device)
    try:
        return Predictor(
            network.to(torch_device), preprocessing, image_key, torch_device, precision=resolved, compile=compile
        )
    except CompilerMissingError as error:
        raise ModelError(f"--compile: {error}") from None
