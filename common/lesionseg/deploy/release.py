"""Trained weights a user can trust: which checkpoint a bundle's numbers describe, and where it is hosted.

A bundle's ``models/model.pt`` is the output of a long run (``benchmarks/busi_accuracy.py``), which writes it
with the run's ``record.json`` (metrics of the evaluation, precision, the exact command) into a run folder
outside the repository. :func:`record_weights` takes one such run into the bundle:

- it loads the checkpoint into the bundle's ``network_def`` (strict: a checkpoint of another network or other
  widths is refused, naming the file), checks that the bundle's configs run the network at the input size it
  was trained at (the run's ``record.json``, else its ``training_state.pt``: a fully convolutional network
  loads at any size, and scores lower at one it never saw), and copies it to ``models/model.pt`` (never over
  another file without ``replace``);
- ``configs/metadata.json``'s ``eval_metrics`` get the run's lesion metrics, the checkpoint's MD5, the precision
  and the command, so the numbers and the file they belong to travel together;
- the model card's "Recorded weights" block (between :data:`CARD_BEGIN` and :data:`CARD_END`, under
  Performance) gets the same as a table.

Where the weights are hosted is written in one place, ``bundles/hosted_weights.yml`` (:data:`HOSTED_WEIGHTS`:
bundle folder name -> URL, ``null`` until hosted); ``lesionseg export-bundle`` writes that URL with the MD5
into the export's ``large_files.yml`` (:func:`hosted_weights_url`), and refuses to export a ``model.pt`` whose
MD5 differs from the recorded one (:func:`check_recorded_weights`): the card's numbers would then describe
other weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from lesionseg.utils.files import replacing, write_text_atomically

__all__ = [
    "CARD_BEGIN",
    "CARD_END",
    "HOSTED_WEIGHTS",
    "RecordedWeightsError",
    "check_recorded_weights",
    "file_md5",
    "hosted_weights_url",
    "record_weights",
    "recorded_block",
    "relative_to_checkout",
]

logger = logging.getLogger(__name__)

#: the file beside the bundle folders naming where each bundle's weights are hosted
HOSTED_WEIGHTS = "hosted_weights.yml"
#: the model card's markers around the block :func:`record_weights` rewrites
CARD_BEGIN = "<!-- recorded-weights: written by `lesionseg record-weights`; edit the run, not this block -->"
CARD_END = "<!-- /recorded-weights -->"
#: metrics of the evaluation's lesion images (``summary.json``'s ``lesion`` group) copied into ``eval_metrics``
LESION_METRICS = ("dice", "iou", "precision", "sensitivity", "hd95")
MODEL_FILE = Path("models") / "model.pt"


class RecordedWeightsError(ValueError):
    """A run, a bundle or a checkpoint that cannot be recorded or exported as it is; the message names the file."""


def file_md5(path: Path) -> str:
    """The MD5 of a file, read in 1 MiB chunks (the checksum ``large_files.yml`` and the zoo use)."""
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hosted_weights_url(bundle: Path) -> str | None:
    """The URL of ``bundle``'s weights in ``<bundle>/../hosted_weights.yml``; None when not hosted yet (or no file).

    Raises:
        RecordedWeightsError: naming the file, when it is not a mapping of bundle names to an ``https://`` URL or
            ``null``.
    """
    path = Path(bundle).parent / HOSTED_WEIGHTS
    if not path.is_file():
        return None
    try:
        hosted = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise RecordedWeightsError(f"{path}: not YAML ({error})") from error
    if not isinstance(hosted, dict):
        raise RecordedWeightsError(f"{path}: expected bundle folder name: URL lines, found {type(hosted).__name__}")
    url = hosted.get(Path(bundle).name)
    if url is not None and not (isinstance(url, str) and url.startswith("https://")):
        raise RecordedWeightsError(f"{path}: {Path(bundle).name}: expected an https:// URL or null, found {url!r}")
    return url


def recorded_md5(bundle: Path) -> str | None:
    """The checkpoint MD5 in ``configs/metadata.json``'s ``eval_metrics`` (None when no run was recorded)."""
    metadata = json.loads((Path(bundle) / "configs" / "metadata.json").read_text(encoding="utf-8"))
    return (metadata.get("eval_metrics") or {}).get("model_md5")


def check_recorded_weights(bundle: Path, weights: Path) -> None:
    """Refuse ``weights`` when the bundle's metadata records another checkpoint's metrics.

    Raises:
        RecordedWeightsError: naming both MD5s and what to do, when they differ.
    """
    recorded = recorded_md5(bundle)
    if recorded is None:
        return
    actual = file_md5(weights)
    if actual != recorded:
        raise RecordedWeightsError(
            f"{weights}: MD5 {actual}, but {Path(bundle) / 'configs' / 'metadata.json'} records the metrics of "
            f"MD5 {recorded}; the card's numbers would describe other weights. Record this checkpoint's run with "
            "`lesionseg record-weights`, or put the recorded checkpoint back"
        )


def record_weights(bundle: Path, run: Path, command: str | None = None, replace: bool = False) -> dict[str, Any]:
    """Make the checkpoint of ``run`` the bundle's weights, with its metrics, MD5 and command.

    Args:
        bundle: the bundle folder (``configs/metadata.json``, ``configs/inference.yaml``, ``docs/README.md``).
        run: one model's folder of a ``benchmarks/busi_accuracy.py`` run: ``models/model.pt`` and ``record.json``
            (``summary`` with a ``lesion`` group; ``command`` and ``precision`` where the run wrote them).
        command: the command that made the run, when ``record.json`` has none (runs made before
            ``busi_accuracy.py`` recorded it).
        replace: write over a ``models/model.pt`` of the bundle that differs from the run's.

    Returns:
        the ``eval_metrics`` written into ``configs/metadata.json``.

    Raises:
        FileNotFoundError: naming the run's checkpoint or record when one is missing.
        RecordedWeightsError: naming the file, when the record lacks the lesion metrics or the command, the
            checkpoint does not load into the bundle's network, the run was trained at another ``image_size``
            than the bundle's configs use or with other network options (its training state, else its
            overrides), the checkpoint is not
            the one the record scored (``checkpoint_md5``), the card has no recorded-weights block, the bundle
            has other weights and ``replace`` is False, or another run's ``training_state.pt`` lies in the
            bundle's ``models/``. Nothing is written then.
    """
    bundle, run = Path(bundle), Path(run)
    checkpoint, record_path = run / MODEL_FILE, run / "record.json"
    for path in (checkpoint, record_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; is {run} one model's folder of a finished busi_accuracy run?")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RecordedWeightsError(f"{record_path}: not JSON ({error})") from error
    lesion = (record.get("summary") or {}).get("lesion") if isinstance(record, dict) else None
    missing = [name for name in LESION_METRICS if not _finite((lesion or {}).get(name, {}).get("mean"))]
    if missing:
        raise RecordedWeightsError(
            f"{record_path}: no summary.lesion mean of {', '.join(missing)} (is the run's evaluation finished?)"
        )
    command = record.get("command") or command
    if not command:
        raise RecordedWeightsError(f"{record_path}: no command recorded; give the one that made the run (--command)")
    if bundle.resolve().parent.name == "bundles":  # in a checkout: <checkout>/bundles/<bundle>
        command = relative_to_checkout(command, bundle.resolve().parent.parent)
    _check_loads(bundle, checkpoint)
    image_size = _check_image_size(bundle, run, record)
    _check_network_options(bundle, run, record, record_path)
    md5 = file_md5(checkpoint)
    if "checkpoint_md5" not in record:
        logger.warning(
            "%s: written before records stored their checkpoint's MD5; not checked that %s is the checkpoint it scored",
            record_path,
            checkpoint,
        )
    elif record["checkpoint_md5"] != md5:
        raise RecordedWeightsError(
            f"{checkpoint}: not the checkpoint {record_path} scored (MD5 {record['checkpoint_md5']} then, {md5} "
            "now: was the run trained on after its evaluation?); evaluate the run again, or record the run's own "
            "checkpoint"
        )
    target = bundle / MODEL_FILE
    in_place = target.is_file() and file_md5(target) == md5
    if target.is_file() and not in_place and not replace:
        raise RecordedWeightsError(f"{target}: holds other weights; --replace (replace=True) writes over them")
    stale_state = target.parent / "training_state.pt"
    if not in_place and stale_state.is_file():
        raise RecordedWeightsError(
            f"{stale_state}: the training state of another run lies in the bundle's models/; beside the recorded "
            "weights, evaluation and inference would check them against that run's settings and training would "
            "resume from it. Move it away (or delete it) first"
        )
    card = bundle / "docs" / "README.md"
    card_text = card.read_text(encoding="utf-8")
    if card_text.count(CARD_BEGIN) != 1 or card_text.count(CARD_END) != 1:
        raise RecordedWeightsError(f"{card}: needs one '{CARD_BEGIN}' ... '{CARD_END}' block (under Performance)")

    eval_metrics = {f"busi_lesion_{name}": round(float(lesion[name]["mean"]), 4) for name in LESION_METRICS}
    eval_metrics["busi_lesion_dice_std"] = round(float(lesion["dice"]["std"]), 4)
    eval_metrics["busi_lesion_images"] = int(lesion.get("n", lesion["dice"].get("count", 0)))
    eval_metrics["busi_protocol"] = record.get("preset", "short")  # busi_accuracy.py's --preset
    eval_metrics["precision"] = record.get("precision") or (record.get("overrides") or {}).get("precision", "default")
    eval_metrics["model_md5"] = md5
    eval_metrics["command"] = command

    if not in_place:
        with replacing(target) as temporary:
            shutil.copyfile(checkpoint, temporary)
        logger.info("copied %s to %s", checkpoint, target)
    # the card before the metadata: an error between the two leaves the metadata's MD5 that of the old weights,
    # which export-bundle refuses, rather than the new MD5 beside the old card
    begin, end = card_text.index(CARD_BEGIN), card_text.index(CARD_END)
    block = recorded_block(eval_metrics, record, image_size)
    write_text_atomically(card, card_text[:begin] + block + card_text[end + len(CARD_END) :])
    metadata_path = bundle / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    metadata["eval_metrics"] = eval_metrics
    write_text_atomically(metadata_path, json.dumps(metadata, indent=4) + "\n")
    logger.info("%s: recorded %s (MD5 %s, lesion Dice %.4f)", bundle, checkpoint, md5, eval_metrics["busi_lesion_dice"])
    return eval_metrics


def recorded_block(eval_metrics: dict[str, Any], record: dict[str, Any], image_size: list[int]) -> str:
    """The model card's block, markers included: the record's lesion metrics as its ``results.md`` rounds them,
    the checkpoint's MD5, the input size it was trained at and the command."""
    seconds = record.get("wall_seconds")
    wall_time = f"{seconds / 3600:.1f} h" if _finite(seconds) else "not recorded"
    # from the record's own values: eval_metrics holds them rounded to 4 places, and rounding those again to 3 can
    # differ from the run's results.md (0.76152 -> 0.7615 -> "0.761", where the run says 0.762)
    lesion = record["summary"]["lesion"]
    rows = [
        "| lesion images | Dice | IoU | precision | sensitivity | HD95 (px) | precision mode | wall time |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
        f"| {eval_metrics['busi_lesion_images']} | {lesion['dice']['mean']:.3f} ± {lesion['dice']['std']:.3f} | "
        f"{lesion['iou']['mean']:.3f} | {lesion['precision']['mean']:.3f} | {lesion['sensitivity']['mean']:.3f} | "
        f"{lesion['hd95']['mean']:.1f} | {eval_metrics['precision']} | {wall_time} |",
    ]
    text = [
        CARD_BEGIN,
        "",
        f"`models/model.pt` (MD5 `{eval_metrics['model_md5']}`) is the checkpoint of this run of the BUSI "
        f"comparison's {eval_metrics['busi_protocol']} protocol, trained at the bundle's `image_size` "
        f"({'×'.join(map(str, image_size))}) and evaluated on its validation split's lesion images (also in "
        "`configs/metadata.json`'s `eval_metrics`):",
        "",
        *rows,
        "",
        # a code span, not a fenced block: the zoo export keeps it (marked as a command of the project)
        f"Made by `{_one_line(eval_metrics['command'])}`.",
        "",
        CARD_END,
    ]
    return "\n".join(text)


def relative_to_checkout(command: str, checkout: Path) -> str:
    """``command`` with its absolute paths inside ``checkout``'s parent folder written relative to ``checkout``,
    where ``benchmarks/busi_accuracy.py`` runs: ``/home/me/runs/busi_paper`` becomes ``../runs/busi_paper`` for
    a checkout ``/home/me/lesionseg``. The card and ``metadata.json`` travel (the model zoo); a path of the
    machine that made the run would mean nothing there. Only those path prefixes change (at the start of a
    word, after ``=`` or a quote); the rest of the command, quoting and shell syntax included, is kept.

    Example:
        >>> relative_to_checkout("python b.py --output /w/runs/x --data=/w/data /elsewhere", Path("/w/repo"))
        'python b.py --output ../runs/x --data=../data /elsewhere'
        >>> relative_to_checkout("python /w/repo/b.py --out '/w/r x' 2>&1 | tee /w/log", Path("/w/repo"))
        "python b.py --out '../r x' 2>&1 | tee ../log"
    """
    checkout = Path(checkout)
    if checkout.parent == Path(checkout.anchor):  # a checkout at the top: every absolute path would move
        return command
    for prefix, replacement in ((f"{checkout}/", ""), (f"{checkout.parent}/", "../")):
        command = re.sub(r"(^|[\s='\"])" + re.escape(prefix), lambda match: match.group(1) + replacement, command)
    return command


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _one_line(command: str) -> str:
    return re.sub(r"\s+", " ", command).strip()


def _check_image_size(bundle: Path, run: Path, record: dict[str, Any]) -> list[int]:
    """The input size the run trained at (its ``record.json``'s ``image_size``, else its ``training_state.pt``'s
    settings), checked against the ``image_size`` of the bundle's training and inference configs.

    Raises:
        RecordedWeightsError: naming the file, when neither says the size, or a config uses another size: the
            bundle would then evaluate and infer with the weights at a size they never saw.
    """
    from monai.bundle import ConfigParser

    from lesionseg.engines.checkpoint import CheckpointError, load_checkpoint

    state_path = run / "models" / "training_state.pt"
    # record.json first: the state holds the size too, but is the optimizer's moments as well (hundreds of MB)
    trained, source = record.get("image_size"), run / "record.json"
    if trained is None and state_path.is_file():  # a run recorded before record.json stored its size
        try:
            state = load_checkpoint(state_path)
        except CheckpointError as error:
            raise RecordedWeightsError(str(error)) from error
        settings = state.get("settings") if isinstance(state, dict) else None
        trained, source = (settings or {}).get("image_size"), state_path
    if not isinstance(trained, list) or not trained:
        raise RecordedWeightsError(
            f"{source}: does not say the input size the run was trained at (record.json's image_size, or "
            f"{state_path}'s settings); record a run whose record.json or training state says it"
        )
    for name in ("train.yaml", "inference.yaml"):
        config = bundle / "configs" / name
        parser = ConfigParser()
        parser.read_config(str(config))
        used = list(parser.get("image_size"))
        if used != list(trained):
            raise RecordedWeightsError(
                f"{config}: image_size {used}, but {run} was trained at {list(trained)} ({source}); the bundle "
                f"would run these weights at a size they never saw. Set image_size: {list(trained)} in the bundle's "
                "configs, or record a run trained at the configs' size"
            )
    return list(trained)


def _check_network_options(bundle: Path, run: Path, record: dict[str, Any], record_path: Path) -> None:
    """Refuse a run trained with other network options than the bundle's ``inference.yaml`` builds its network
    with (options without parameters, like DC-Net's ``pooling``, load under any value, and the bundle would run
    the weights as another network): from the run's ``training_state.pt`` where it is kept, else from the
    ``network_def#`` entries of its record's overrides."""
    from monai.bundle import ConfigParser

    from lesionseg.engines.checkpoint import (
        EVALUATION_KEYS,
        CheckpointError,
        check_evaluation_settings,
        network_options,
    )

    config = bundle / "configs" / "inference.yaml"
    parser = ConfigParser()
    parser.read_config(str(config))
    used = network_options(parser.get("network_def"))
    fix = f"Set the options in {config}'s network_def as the run trained with, or record a run of the bundle's network"
    if (run / "models" / "training_state.pt").is_file():
        try:
            check_evaluation_settings(run / "models", {"network_def": used}, eval_section="all", fix=fix)
        except CheckpointError as error:
            raise RecordedWeightsError(str(error)) from None
        return
    for key, value in (record.get("overrides") or {}).items():
        option = key.partition("#")[2]
        if key in EVALUATION_KEYS and _as_json(used.get(option)) != _as_json(value):
            raise RecordedWeightsError(
                f"{config}: {key} is {used.get(option)!r}, but the run was trained with {value!r} ({record_path}'s "
                f"overrides): the bundle would run these weights as another network. {fix}"
            )


def _as_json(value: Any) -> Any:
    # a value as JSON and YAML read it back: tuples as lists
    return json.loads(json.dumps(value, default=str))


def _check_loads(bundle: Path, checkpoint: Path) -> None:
    """Load ``checkpoint`` into the bundle's ``network_def`` (strict), as the bundle's inference does."""
    from monai.bundle import ConfigParser

    from lesionseg.engines.checkpoint import CheckpointError, load_checkpoint

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.yaml"))
    network = parser.get_parsed_content("network_def")
    try:
        state = load_checkpoint(checkpoint)  # weights only: a file with pickled code is refused, not run
    except CheckpointError as error:
        raise RecordedWeightsError(str(error)) from error
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        network.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as error:
        first = str(error).strip().splitlines()[0]
        raise RecordedWeightsError(f"{checkpoint}: not a checkpoint of {bundle}'s network_def ({first})") from error
