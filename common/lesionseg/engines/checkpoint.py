"""Crash-safe training checkpoints: a resumable training state every epoch and the best model, both atomic.

MONAI's ``CheckpointSaver`` writes in place (its ``DiskSaver`` has ``atomic=False``) and, with a fixed
``key_metric_filename``, removes the previous best file before writing the new one, so a process killed at
that moment leaves no ``model.pt`` or a truncated one; and a restarted run does not know the best metric so
far, so its first validation would overwrite the best model with whatever it scores. :class:`TrainingCheckpoint`
keeps both files consistent through a ``kill -9`` at any moment:

1. every epoch, after validation, it writes the training state (model, optimizer, learning-rate scheduler or
   any other object with ``state_dict``, the trainer's epoch and iteration, the best validation metric and its
   epoch) to ``state_file``;
2. then, when that epoch's validation was the best so far, the network's plain state dict to ``best_file``.

Each file is written to a temporary file in the same folder, flushed to disk and renamed over the old one
(:func:`save_atomically`), so a reader sees the old file or the new one, never a part. On a restart with
``resume=True`` it loads ``state_file`` at ``Events.STARTED`` (``weights_only=True``): training continues
with the epoch after the saved one, at most the interrupted epoch is lost, and the restored best metric
keeps a worse model from replacing ``best_file``. If the process died between the two writes of an epoch
whose model was the best, ``best_file`` is written again from the restored state, so the order above loses
nothing.

The training state also holds the settings that define the run (``settings``, e.g. ``image_size``,
``learning_rate``, the loss's arguments such as ``loss#alpha``) and a fingerprint of its training and validation
images. On resume each changed setting follows :data:`RESUME_RULES`: one that would mix two runs in one model and
one best metric (the image size, the split, the data, the loss, how the network computes) is refused with an
error naming the key, its old and new values and the fix; one that can change between epochs (the learning rate,
the number of epochs, the batch size...) is applied and logged.

The same stored settings guard the weights' later use: :func:`check_evaluation_settings` (the bundles'
evaluate workflow, ``lesionseg predict``, ``lesionseg record-weights``; the inference workflow for the input
size alone) refuses to run ``model.pt`` at another input size or with other network options than its run's, or
to score it on another validation split, since the weights load under any of them; :func:`network_options`
gives the options a ``network_def`` config builds with, defaults included.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import os
import pydoc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from ignite.engine import Engine, Events

from lesionseg.utils.files import replacing

__all__ = [
    "RESUME_RULES",
    "TrainingCheckpoint",
    "CheckpointError",
    "EVALUATION_KEYS",
    "check_evaluation_settings",
    "load_checkpoint",
    "network_options",
    "save_atomically",
]

#: version of the layout of ``state_file``; a file of another version is refused with a clear error
FORMAT_VERSION = 1

#: what a resumed run does with a setting whose value differs from the one stored in the training state:
#: ``"apply"`` the new value and log the change, or ``"refuse"`` to resume (an error naming the key). A key
#: not listed is refused. Keys are config ids: the settings ``{"loss": {"alpha": 0.25}}`` are stored and
#: compared as ``loss#alpha``. (The network's widths and other options that give it other parameters are not
#: settings here: weights of another shape are refused when they are loaded; its options without parameters
#: are.) ``"dataset"`` is the fingerprint of the training and validation images, which the handler takes from
#: the trainer's and the validator's data. ``learning_rate`` is applied to every optimizer of ``save_dict`` (its
#: learning rates, and a scheduler's base rates, scaled by new / old).
RESUME_RULES: dict[str, str] = {
    # define the model and what its best validation metric means: refused
    "dataset": "refuse",
    "image_size": "refuse",
    "val_fraction": "refuse",
    "split_seed": "refuse",
    "easy_to_hard": "refuse",
    # the objective the weights were trained for (DC-Net's DCNetLoss, TaiChiNet's TaiChiNetLoss): refused, as a
    # run that continues with another loss is a model of neither recipe
    "loss#weights": "refuse",
    "loss#harmonic_weight": "refuse",
    "loss#gamma": "refuse",
    "loss#sigma": "refuse",
    "loss#alpha": "refuse",
    "loss#clamp": "refuse",
    "loss#mutual": "refuse",
    "loss#squared_pred": "refuse",
    "loss#batch": "refuse",
    "loss#smooth_nr": "refuse",
    "loss#smooth_dr": "refuse",
    # network options without parameters, which load_state_dict cannot catch: they change what the weights
    # compute (and the validation that chose the best model), or, head_init_std, how the run started
    "network_def#normalise_products": "refuse",
    "network_def#attention_scale": "refuse",
    "network_def#dcp_radius": "refuse",
    "network_def#dcp_neighbourhood": "refuse",
    "network_def#head_init_std": "refuse",
    "network_def#pooling": "refuse",
    "network_def#ablation": "refuse",
    "network_def#mutual_learning": "refuse",
    "network_def#scaled_attention": "refuse",
    "network_def#upsample_mode": "refuse",
    "network_def#inference_output": "refuse",
    # may change between epochs: applied from the resumed epoch on, and logged
    "learning_rate": "apply",
    "max_epochs": "apply",
    "batch_size": "apply",
    "val_interval": "apply",
    "seed": "apply",
    "flip_prob": "apply",
    "aug_prob": "apply",
    "step2_start_epoch": "apply",
    "precision": "apply",
    # in training only, like the augmentation probabilities: the weights compute the same in evaluation
    "network_def#dropout": "apply",
}

#: what makes an evaluation score another model than the one trained (:func:`check_evaluation_settings`): the
#: input size, the network's options without parameters (the weights load under any of them; not head_init_std,
#: which only starts a run) and, for the validation section, the split that chose the checkpoint; the loss and the
#: optimisation settings do not
EVALUATION_KEYS = ("image_size",) + tuple(
    key
    for key, rule in RESUME_RULES.items()
    if key.startswith("network_def#") and rule == "refuse" and key != "network_def#head_init_std"
)
_SPLIT_KEYS = ("val_fraction", "split_seed")
_EVALUATION_FIX = (
    "Evaluate with the values the model was trained with (e.g. --image_size as trained), or pass "
    "--check_training_settings False to evaluate under other settings on purpose"
)

# item keys whose paths identify a training or validation image in the dataset fingerprint
_DATA_KEYS = ("image", "label")

PathLike = str | os.PathLike


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file, the problem and what to do."""


def _unwrap(module: Any) -> Any:
    # DataParallel / DistributedDataParallel keep the network in .module: save the network itself, so that a
    # checkpoint loads on one GPU, several or the CPU alike
    if isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return module.module
    return module


def _temporary_files(path: Path) -> list[Path]:
    # what save_atomically leaves behind when the process dies mid-write
    return sorted(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []


def _is_writer() -> bool:
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return not distributed or torch.distributed.get_rank() == 0


def _plain(value: Any) -> Any:
    # settings as torch.load(weights_only=True) reads them back and == compares them: tuples as lists,
    # numbers as numbers, anything else (a device, a path) as its text
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if torch.is_tensor(value) and value.numel() == 1:
        return value.item()
    return str(value)


def _by_config_id(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    # nested settings by config id, {"loss": {"alpha": 0.25}} -> {"loss#alpha": 0.25}: each value is compared,
    # and a refusal named, as the key a user overrides (--loss#alpha)
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            flat.update(_by_config_id(value, f"{prefix}{key}#"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def data_fingerprint(items: Sequence[Mapping] | None) -> dict[str, Any] | None:
    """The number of items and a SHA-256 of their image and label paths, relative to the folder they share.

    Relative paths, so that a dataset moved or mounted elsewhere keeps its fingerprint; sorted, so that the
    order of a datalist does not matter. ``None`` for data that is not a list of dicts (e.g. a stream).
    """
    if items is None or not isinstance(items, Sequence) or not all(isinstance(item, Mapping) for item in items):
        return None
    paths = [[str(item.get(key)) for key in _DATA_KEYS] for item in items]
    flat = [os.path.abspath(p) for entry in paths for p in entry if p != "None"]
    try:
        root = os.path.commonpath(flat) if flat else ""
    except ValueError:  # paths on different drives
        root = ""
    if root in flat:  # one file: its folder
        root = os.path.dirname(root)

    def relative(path: str) -> str:
        return path if path == "None" or not root else os.path.relpath(os.path.abspath(path), root)

    lines = sorted("\t".join(relative(p) for p in entry) for entry in paths)
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return {"items": len(items), "sha256": digest}


def check_evaluation_settings(
    ckpt_dir: PathLike,
    settings: Mapping[str, Any],
    eval_items: Sequence[Mapping] | None = None,
    eval_section: str = "validation",
    enabled: bool = True,
    fix: str = _EVALUATION_FIX,
) -> None:
    """Refuse to evaluate ``ckpt_dir/model.pt`` under settings it was not trained with.

    The weights load whatever the input size, and whatever the network's options without parameters (DC-Net's
    ``pooling``, TaiChiNet's ``inference_output``...), so an evaluation at another size or with another option
    scores a different model than the one trained, with no error. When the run's ``training_state.pt`` lies
    beside ``model.pt``, the settings it was trained with are compared with ``settings`` (the evaluation's
    ``run_settings``): ``image_size`` and the network's options without parameters; for
    ``eval_section="validation"`` also the split (``val_fraction``, ``split_seed``) and the validation images
    (``eval_items``), since another split would score images the model was trained on. Without a training
    state (recorded weights) nothing is compared; a state of an earlier version compares what it stored.

    Args:
        ckpt_dir: the folder of ``model.pt`` (and ``training_state.pt``).
        settings: the evaluation's settings, as the training's ``run_settings`` (nested or by config id).
        eval_items: the items evaluated, compared with the training's validation images when
            ``eval_section`` is ``"validation"``.
        eval_section: the datalist section evaluated (``validation``, ``training``, ``test``, ``all``).
        enabled: ``False`` evaluates under other settings on purpose (e.g. another input size), without a check.
        fix: the error's last sentence, what to do (the bundle's evaluation options by default).

    Raises:
        CheckpointError: a setting differs, naming each with the value trained and the value now; or the
            training state cannot be read.

    Example::

        # trained at 224 x 224: evaluating at 256 x 256 is refused
        check_evaluation_settings("models", {"image_size": [256, 256]})
    """
    if not isinstance(enabled, bool):
        raise ValueError(
            f"check_training_settings: must be true or false, got {enabled!r} ({type(enabled).__name__}); on the "
            "command line of python -m monai.bundle run write --check_training_settings False: there 'false' is a "
            "string"
        )
    state_file = Path(ckpt_dir) / "training_state.pt"
    if not enabled or not state_file.is_file():
        return
    # mapped, not read: only the settings are used, not the hundreds of MB of weights and moments
    state = load_checkpoint(state_file, mmap=True)
    trained = state.get("settings") if isinstance(state, Mapping) else None
    if not isinstance(trained, Mapping):
        return
    now = _by_config_id(_plain(dict(settings)))
    keys = EVALUATION_KEYS + (_SPLIT_KEYS if eval_section == "validation" else ())
    changed = [
        f"{key}: trained with {trained[key]!r}, now {now[key]!r}"
        for key in keys
        if key in trained and key in now and trained[key] != now[key]
    ]
    network = any(not line.startswith(_SPLIT_KEYS) for line in changed)  # the size or a network option
    split = any(line.startswith(_SPLIT_KEYS) for line in changed)
    if eval_section == "validation" and eval_items is not None:
        before = (trained.get("dataset") or {}).get("validation")
        after = data_fingerprint(eval_items)
        if before and after and before != after:
            changed.append(TrainingCheckpoint._describe_data_change("validation", before, after))
            split = True
    if changed:
        reasons = []
        if network:
            reasons.append("the weights load under them and compute another model")
        if split:
            reasons.append("another split's validation images include images the model trained on")
        lines = "\n".join(f"  {line}" for line in changed)
        raise CheckpointError(
            f"{Path(ckpt_dir) / 'model.pt'}: its run ({state_file.name}) was trained with other settings than "
            f"these ({'; '.join(reasons)}):\n{lines}\n{fix}"
        )


def network_options(network_def: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments a raw ``network_def`` config (``_target_`` and its arguments, unresolved) builds its network
    with: those it writes, and the defaults of its class's other arguments (found by the ``_target_``'s dotted
    path), so that an option a config leaves out is compared by the value it takes. Arguments of a ``_target_``
    that is not a dotted path to a class are the written ones only."""
    written = {str(k): v for k, v in network_def.items() if not str(k).startswith("_")}
    target = pydoc.locate(str(network_def.get("_target_", "")))
    try:
        parameters = inspect.signature(target).parameters if callable(target) else {}
    except (TypeError, ValueError):
        parameters = {}
    defaults = {
        name: parameter.default
        for name, parameter in parameters.items()
        if parameter.default is not inspect.Parameter.empty and name != "self"
    }
    return {**defaults, **written}


def _loader_items(engine: Any) -> Sequence[Mapping] | None:
    # the data dicts behind an engine's data loader (a MONAI Dataset keeps them in .data), if it has any
    loader = getattr(engine, "data_loader", None)
    if loader is None and getattr(engine, "state", None) is not None:
        loader = getattr(engine.state, "dataloader", None)
    return getattr(getattr(loader, "dataset", None), "data", None)


def save_atomically(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` through :func:`lesionseg.utils.files.replacing` with ``durable=True``.

    The temporary file (``.<name>.<random>.tmp``) is flushed to disk (``fsync``) before it replaces ``path``
    (``os.replace``), so a process killed while writing, or a power cut, leaves the previous file (or none)
    in place, never a truncated one; such leftovers of earlier writes are deleted. The file gets the usual
    permissions (``0o666`` less the umask). The folder is created. In a distributed run only rank 0 writes.

    Returns:
        ``path``.

    Raises:
        OSError: from writing, naming ``path`` (not the temporary file).
    """
    path = Path(path)
    if not _is_writer():
        return path
    for leftover in _temporary_files(path):
        leftover.unlink(missing_ok=True)
    with replacing(path, durable=True, suffix=".tmp") as temporary, temporary.open("wb") as file:
        # through a file object: given a path, torch.save names the archive's root after the (random) file name,
        # and the same weights would give other bytes each time
        torch.save(obj, file)
    return path


def load_checkpoint(path: PathLike, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file and say what to do.

    Every checkpoint of the project is read through this function (the bundles' configs through
    :class:`lesionseg.engines.FiniteCheckpointLoader`, a
    :class:`~lesionseg.engines.checkpoint_loader.WeightsOnlyCheckpointLoader`, with the same errors).
    ``weights_only=True`` unpickles tensors, numbers, strings and containers only: a file that carries pickled
    code (a class or function to call while loading) is refused instead of run.

    Args:
        path: the checkpoint file.
        map_location: where its tensors go (``torch.load``'s argument).
        mmap: map the tensors from the file instead of reading them (for a file read for its small entries).

    Raises:
        CheckpointError: the file is missing, truncated, not a checkpoint, or carries pickled code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError... depending on the damage
        raise _load_error(path, error) from None


def _load_error(path: Path, error: BaseException) -> CheckpointError:
    """The :class:`CheckpointError` for what ``torch.load(path, weights_only=True)`` raised.

    PyTorch's own message for a file with pickled code advises loading it with ``weights_only=False``, which
    would run that code: the project refuses such files instead, so its message is replaced, not chained.
    """
    text = str(error)
    if "Weights only load failed" in text or "weights_only" in text:
        found = text.partition("Unsupported global: GLOBAL ")[2].split(" ", 1)[0]
        return CheckpointError(
            f"{path}: refused: the file holds pickled Python objects other than tensors and plain containers"
            + (f" (it would call {found})" if found else "")
            + ". Unpickling them would run their code with your permissions, so lesionseg refuses such "
            "checkpoints instead of loading them (weights only, see the Security section of its README). "
            "Load only checkpoints from sources you trust; the checkpoints these bundles write are plain state dicts."
        )
    detail = text.splitlines()[0] if text else ""
    return CheckpointError(
        f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: {detail}); "
        "it may be truncated or not a checkpoint at all: delete it (or restore it) and run again"
    )


class TrainingCheckpoint:
    """Ignite handler: an atomic, resumable training checkpoint every epoch and the best model (module docstring).

    Attach it to the trainer **after** the ``ValidationHandler`` (later in ``train_handlers``), so that each
    epoch's checkpoint includes that epoch's validation.

    ``state_file`` holds ``{"format": 1, "trainer": trainer.state_dict(), "best": {...}, "settings": {...},
    <name>: <state dict> for each entry of save_dict}``; ``best`` holds ``best_metric`` and ``best_metric_epoch``
    of the validator (and of the trainer's own key metric); ``settings`` the ``settings`` given and the
    ``dataset`` fingerprint (:func:`data_fingerprint` of the trainer's and the validator's data). ``best_file``
    holds ``save_dict[best_key]``'s plain state dict.

    On resume, a setting whose value differs from the stored one is applied and logged, or refused, by
    :data:`RESUME_RULES`; refused, nothing is loaded and the error names each such key with its old and new
    value. A state written before settings were stored resumes with a warning that they cannot be compared; a
    setting that the state does not hold (it was written before that setting was stored, e.g. ``loss#alpha``) is
    not compared, with a warning naming it.

    Args:
        state_file: the resumable checkpoint, e.g. ``models/training_state.pt``.
        save_dict: the objects to save and restore, by name, each with ``state_dict`` / ``load_state_dict``:
            ``{"model": network, "optimizer": optimizer}``, plus e.g. ``"lr_scheduler"``. The trainer itself
            is added (its epoch and iteration).
        validator: the evaluator whose ``best_metric`` / ``best_metric_epoch`` decide the best model, or
            ``None`` (no best model is written).
        best_file: where the best model goes, or ``None`` for none.
        best_key: the entry of ``save_dict`` written to ``best_file``.
        resume: load ``state_file`` when the run starts, if it exists; ``False`` starts afresh (and the new run
            overwrites the file). Must be a bool: the text ``"false"`` is an error, not a true value.
        settings: the config values that define the run, by config key (``{"image_size": [256, 256],
            "learning_rate": 3e-4, ...}``), stored with the state and compared on resume (:data:`RESUME_RULES`).
            A nested mapping holds the values of one config section by their keys there (``{"loss": {"alpha":
            0.25}}``); they are stored and compared by config id (``loss#alpha``).
        label_key: the validator's ground-truth key. A validation whose every mask is empty (no lesion) cannot
            choose a model (every model scores alike): an error after the first validation, not a ``best_file``
            that silently keeps the first epoch.
        save_interval: write ``state_file`` every this many epochs (the last epoch is always written).
        name: ``logging.Logger`` name; ``None`` uses the engine's logger.

    Raises:
        ValueError: ``best_key`` is not in ``save_dict`` (when ``best_file`` is set), ``save_interval`` < 1, or
            ``resume`` is not a bool; when the run starts, an empty validation data set; after a validation,
            one without any lesion.
    """

    def __init__(
        self,
        state_file: PathLike,
        save_dict: Mapping[str, Any],
        validator: Engine | None = None,
        best_file: PathLike | None = None,
        best_key: str = "model",
        resume: bool = True,
        save_interval: int = 1,
        name: str | None = None,
        settings: Mapping[str, Any] | None = None,
        label_key: str = "label",
    ) -> None:
        if best_file is not None and best_key not in save_dict:
            raise ValueError(f"best_key {best_key!r} is not in save_dict (has {sorted(save_dict)})")
        if {"trainer", "best", "format", "settings"} & set(save_dict):
            raise ValueError(
                "save_dict may not use the names 'trainer', 'best', 'format' or 'settings'; they are added"
            )
        if isinstance(save_interval, bool) or not isinstance(save_interval, int) or save_interval < 1:
            raise ValueError(f"save_interval must be a positive integer, got {save_interval!r}")
        if not isinstance(resume, bool):
            raise ValueError(
                f"resume: must be true or false, got {resume!r} ({type(resume).__name__}); on the command line of "
                "python -m monai.bundle run write --resume False (or True): there 'false' is a string"
            )
        if settings is not None and not isinstance(settings, Mapping):
            raise ValueError(f"settings must be a mapping of config keys to values, got {type(settings).__name__}")
        self.state_file = Path(state_file)
        self.save_dict = dict(save_dict)
        self.validator = validator
        self.best_file = None if best_file is None else Path(best_file)
        self.best_key = best_key
        self.resume = resume
        self.save_interval = save_interval
        self.settings = _by_config_id(_plain(dict(settings or {})))
        self.label_key = label_key
        self._labels_seen, self._lesion_seen = False, False
        self.logger = logging.getLogger(name)
        self._name = name
        #: the epoch the run resumed from (0: it started afresh), set at ``Events.STARTED``
        self.resumed_from_epoch = 0

    def attach(self, engine: Engine) -> None:
        """
        Args:
            engine: the trainer.

        Raises:
            CheckpointError: ``resume`` is set and ``best_file`` exists without a state: the best model would
                write over a file this run did not make (the bundle's recorded weights). Checked here, before
                anything runs.
        """
        if self._name is None:
            self.logger = engine.logger
        # now, not when the run starts: other STARTED handlers (TaiChiNet's preparation) would run first
        self._check_best_file_is_a_run_of_this_folder()
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)
        if self.validator is not None and self.best_file is not None:
            self.validator.add_event_handler(Events.EPOCH_STARTED, self._reset_lesion_count)
            self.validator.add_event_handler(Events.ITERATION_COMPLETED, self._count_lesions)
            self.validator.add_event_handler(Events.EPOCH_COMPLETED, self._check_lesions)

    def _check_best_file_is_a_run_of_this_folder(self) -> None:
        if self.resume and not self.state_file.is_file() and self.best_file is not None and self.best_file.is_file():
            raise CheckpointError(
                f"{self.best_file}: exists, but {self.state_file} does not, so it is not a run of this folder (the "
                "bundle's recorded weights, or a copied model) and training would write over it; train into another "
                "folder (--ckpt_dir), or pass --resume False to start afresh and write over it"
            )

    # ------------------------------------------------------------------- a validation that can choose a model

    def _reset_lesion_count(self, validator: Engine) -> None:
        self._labels_seen, self._lesion_seen = False, False

    def _count_lesions(self, validator: Engine) -> None:
        # the batch as collated (a dict) or decollated (a list of dicts, MONAI's default)
        batch = validator.state.batch
        items = [batch] if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else []
        for item in items:
            label = item.get(self.label_key) if isinstance(item, Mapping) else None
            if torch.is_tensor(label):
                self._labels_seen = True
                self._lesion_seen = self._lesion_seen or bool((label > 0).any())

    def _check_lesions(self, validator: Engine) -> None:
        """After a validation: every mask empty means every model scores alike, so none can be chosen."""
        import ignite.distributed as idist

        if not self._labels_seen:
            return  # an evaluator without labels in its batches: nothing to tell
        if idist.all_reduce(int(self._lesion_seen), op="MAX"):
            return
        raise ValueError(
            f"the validation data has no lesion: every {self.label_key!r} mask is empty, so every model scores the "
            f"same and {self.best_file} would keep the first epoch's weights whatever training achieves; put images "
            "with a lesion into the validation section (a split keeps the class proportions of a dataset with "
            "classes: use more images or a larger val_fraction)"
        )

    def run_settings(self, engine: Engine) -> dict[str, Any]:
        """``settings`` and the fingerprint of the data that ``engine`` (the trainer) and the validator read."""
        data = {"training": data_fingerprint(_loader_items(engine))}
        if self.validator is not None:
            data["validation"] = data_fingerprint(_loader_items(self.validator))
        if all(value is None for value in data.values()):
            return dict(self.settings)
        return {**self.settings, "dataset": data}

    # ------------------------------------------------------------------------------------------------- state

    @staticmethod
    def _best_of(engine: Engine | None) -> dict[str, Any]:
        if engine is None:
            return {}
        metric = getattr(engine.state, "best_metric", -1)
        metric = float(metric.item() if torch.is_tensor(metric) else metric)
        return {"best_metric": metric, "best_metric_epoch": int(getattr(engine.state, "best_metric_epoch", -1))}

    def state_dict(self, engine: Engine) -> dict[str, Any]:
        """What ``state_file`` holds for the trainer ``engine`` now."""
        state: dict[str, Any] = {"format": FORMAT_VERSION, "trainer": dict(engine.state_dict())}
        state["best"] = {"validator": self._best_of(self.validator), "trainer": self._best_of(engine)}
        state["settings"] = self.run_settings(engine)
        for key, obj in self.save_dict.items():
            state[key] = _unwrap(obj).state_dict()
        return state

    def _best_is_this_epoch(self, epoch: int) -> bool:
        return self.validator is not None and int(getattr(self.validator.state, "best_metric_epoch", -1)) == epoch

    def _write_best(self, state: Mapping[str, Any] | None = None) -> None:
        if self.best_file is None:
            return
        weights = state[self.best_key] if state is not None else _unwrap(self.save_dict[self.best_key]).state_dict()
        save_atomically(weights, self.best_file)

    def save(self, engine: Engine) -> None:
        """Write ``state_file``, then, if this epoch's validation was the best so far, ``best_file``."""
        epoch = engine.state.epoch
        last = engine.state.max_epochs is not None and epoch >= engine.state.max_epochs
        best = self._best_is_this_epoch(epoch)
        if epoch % self.save_interval and not last and not best:
            return
        save_atomically(self.state_dict(engine), self.state_file)
        if best:
            self._write_best()
            metric = self.validator.state.best_metric
            self.logger.info(f"epoch {epoch}: best model so far (validation {metric:.4f}) written to {self.best_file}")

    def _check_validation_data(self) -> None:
        # without validation no epoch is ever the best, and the run would end without best_file
        loader = getattr(self.validator, "data_loader", None)
        if self.validator is None or self.best_file is None or loader is None:
            return
        try:
            empty = len(loader) == 0
        except TypeError:  # an iterable without a length
            return
        if empty:
            raise ValueError(
                f"the validation data is empty: the best model ({self.best_file}) is chosen by validation and would "
                "never be written; give the datalist a non-empty 'validation' section, or a dataset folder with "
                "enough images for val_fraction"
            )

    @staticmethod
    def _describe_data_change(section: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
        if old["items"] != new["items"]:
            return f"the {section} images differ ({old['items']} then, {new['items']} now)"
        return f"the {section} images differ (as many, {new['items']}, but other files)"

    def _compare_settings(self, saved: Any, engine: Engine, fix: str) -> dict[str, tuple[Any, Any]]:
        """Refuse a changed setting that :data:`RESUME_RULES` refuses; return the changed ones to apply."""
        now = self.run_settings(engine)
        if not isinstance(saved, Mapping):
            self.logger.warning(
                f"{self.state_file}: written before lesionseg stored a run's settings; resuming without comparing "
                f"them (image size, data, learning rate...) to this run's"
            )
            return {}
        refused, applied = [], {}
        unstored = [key for key in now if key not in saved]
        if unstored:  # a state of an earlier version: say what could not be checked, as for one without settings
            self.logger.warning(
                f"{self.state_file}: written by an earlier version, without {', '.join(unstored)}; resuming without "
                "comparing them to this run's (keep them as the run started)"
            )
        for key in [*now, *(k for k in saved if k not in now)]:
            if key not in now or key not in saved:
                self.logger.debug(f"{self.state_file}: {key!r} is not stored in both runs; not compared")
                continue
            old, new = saved[key], now[key]
            if key == "dataset":
                for section in ("training", "validation"):
                    before, after = (old or {}).get(section), (new or {}).get(section)
                    if before and after and before != after:
                        refused.append(f"dataset: {self._describe_data_change(section, before, after)}")
            elif old != new:
                if RESUME_RULES.get(key, "refuse") == "apply":
                    applied[key] = (old, new)
                else:
                    refused.append(f"{key}: was {old!r}, now {new!r}")
        if refused:
            lines = "\n".join(f"  {line}" for line in refused)
            raise CheckpointError(
                f"{self.state_file}: holds a run trained with other settings; resuming would mix the two in one model "
                f"and keep the old best validation metric:\n{lines}\nStart a new run folder (--ckpt_dir elsewhere), "
                f"or go back to the old values, or {fix} (this overwrites {self.state_file.name}"
                + (f" and {self.best_file.name})" if self.best_file is not None else ")")
            )
        return applied

    def _apply_learning_rate(self, old: Any, new: Any) -> bool:
        # the new rate replaces the restored one: every group's rate (and a scheduler's base rates) times new / old,
        # so that a schedule keeps its progress
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (old, new)):
            return False
        scale, applied = new / old, False
        for obj in self.save_dict.values():
            obj = _unwrap(obj)
            if isinstance(obj, torch.optim.Optimizer):
                for group in obj.param_groups:
                    for key in ("lr", "initial_lr"):
                        if key in group:
                            group[key] = group[key] * scale
                applied = True
            elif isinstance(getattr(obj, "base_lrs", None), list):
                obj.base_lrs = [rate * scale for rate in obj.base_lrs]
        return applied

    def load(self, engine: Engine) -> None:
        """Restore everything from ``state_file`` when ``resume`` is set and the file exists.

        Raises:
            CheckpointError: the file cannot be used, or holds a run with other settings (:data:`RESUME_RULES`).
            ValueError: the validator's data is empty, so no best model would ever be written.
        """
        self.resumed_from_epoch = 0
        self._check_validation_data()
        if not self.resume or not self.state_file.is_file():
            if self.state_file.is_file():
                self.logger.info(f"resume=False: starting afresh; {self.state_file} will be overwritten")
            return
        state = load_checkpoint(self.state_file)
        fix = "delete it, or pass --resume False, to start afresh"
        if not isinstance(state, Mapping) or state.get("format") != FORMAT_VERSION or "trainer" not in state:
            raise CheckpointError(
                f"{self.state_file}: not a training state written by this version of lesionseg; {fix}"
            )
        missing = [key for key in self.save_dict if key not in state]
        if missing:
            raise CheckpointError(f"{self.state_file}: has no {missing} (it was written by another recipe); {fix}")
        changed = self._compare_settings(state.get("settings"), engine, fix)
        saved = state["trainer"]
        epoch, max_epochs = (
            int(saved.get("epoch", saved["iteration"] // saved["epoch_length"])),
            engine.state.max_epochs,
        )
        if max_epochs is not None and epoch > max_epochs:
            raise CheckpointError(
                f"{self.state_file}: holds epoch {epoch}, beyond max_epochs {max_epochs}; raise max_epochs to "
                f"continue training, or {fix}"
            )
        for key, obj in self.save_dict.items():
            try:
                _unwrap(obj).load_state_dict(state[key])
            except (RuntimeError, ValueError, KeyError) as error:
                raise CheckpointError(
                    f"{self.state_file}: its {key!r} does not fit this configuration ({str(error).splitlines()[0]}); "
                    f"was it written with other settings (e.g. network widths)? {fix}"
                ) from error
        epoch_length = engine.state.epoch_length or saved["epoch_length"]
        if epoch_length != saved["epoch_length"]:
            self.logger.warning(
                f"{self.state_file}: written with {saved['epoch_length']} iterations an epoch, now {epoch_length} "
                f"(did the dataset or batch size change?); resuming after epoch {epoch} all the same"
            )
        # the configured max_epochs wins over the saved one: a finished run can be extended
        engine.load_state_dict({"epoch": epoch, "epoch_length": epoch_length, "max_epochs": max_epochs or epoch})
        engine.state.max_epochs = max_epochs
        for target, best in ((self.validator, state["best"].get("validator")), (engine, state["best"].get("trainer"))):
            if target is not None and best:
                target.state.best_metric = best["best_metric"]
                target.state.best_metric_epoch = best["best_metric_epoch"]
        self.resumed_from_epoch = epoch
        for key, (old, new) in changed.items():
            note = ""
            if key == "learning_rate" and self._apply_learning_rate(old, new):
                note = " (the optimizer's rate restored from the state is replaced)"
            self.logger.info(f"{self.state_file}: {key} was {old!r}, now {new!r}: applied from epoch {epoch + 1}{note}")
        if self._best_is_this_epoch(epoch):
            # the process may have died between this epoch's two writes: the best model is in the state
            self._write_best(state)
        best = state["best"].get("validator") or {}
        best_text = (
            f"best validation {best['best_metric']:.4f} at epoch {best['best_metric_epoch']}"
            if best.get("best_metric_epoch", -1) > 0 and math.isfinite(best["best_metric"])
            else "no validation yet"
        )
        if max_epochs is not None and epoch >= max_epochs:
            self.logger.info(
                f"{self.state_file}: training already ran all {max_epochs} epochs ({best_text}); nothing to do. "
                f"Raise max_epochs to train on, or {fix}"
            )
        else:
            self.logger.info(
                f"resuming from {self.state_file}: epoch {epoch} of {max_epochs} done, continuing with epoch "
                f"{epoch + 1} ({best_text})"
            )
