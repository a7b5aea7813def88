"""Interrupted training: atomic checkpoints, resuming through the bundles after ``kill -9``, and the best model
that a resumed run never replaces with a worse one (lesionseg.engines.checkpoint)."""

from __future__ import annotations

import inspect
import json
import os
import pydoc
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser

from lesionseg.data.phantoms import write_phantom_dataset
from lesionseg.engines.checkpoint import (
    RESUME_RULES,
    CheckpointError,
    TrainingCheckpoint,
    load_checkpoint,
    save_atomically,
)
from lesionseg.engines.config_checks import ConfigError, check_training_config
from lesionseg.networks.nets import DCNet, TaiChiNet

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
TINY = {"image_size": [32, 32], "network_def#features": [2, 4, 8, 16, 32], "num_workers": 0, "batch_size": 2}
TINY_PREPARATION = {"image_size": [32, 32], "network_def#features": [4, 4, 8, 8, 16, 4], "num_workers": 0,
                    "batch_size": 4, "max_epochs": 1}


# ------------------------------------------------------------------------------------------ the handler itself


class ScriptedValidator(Engine):
    """An evaluator whose key metric follows a script, with MONAI's best-metric bookkeeping (Workflow)."""

    def __init__(self, scores, batches=(0,)):
        super().__init__(lambda engine, batch: None)
        self.scores = scores
        self.batches = list(batches)
        self.state.best_metric, self.state.best_metric_epoch = -1.0, -1

        @self.on(Events.EPOCH_COMPLETED)
        def compare(engine):
            score = self.scores[self.global_epoch - 1]
            if engine.state.best_metric_epoch == -1 or score > engine.state.best_metric:
                engine.state.best_metric, engine.state.best_metric_epoch = score, self.global_epoch

    def validate(self, global_epoch):
        # as MONAI's Evaluator.run(global_epoch): its epoch is the trainer's
        self.global_epoch = global_epoch
        self.state.max_epochs, self.state.epoch, self.state.iteration = global_epoch, global_epoch - 1, 0
        self.run(self.batches)


class ListLoader(list):
    """Batches as a list, with the MONAI-style ``.dataset.data`` (the data dicts) of a data loader."""

    def __init__(self, batches, items):
        super().__init__(batches)
        self.dataset = SimpleNamespace(data=items)


def _items(*names):
    return [{"image": f"/data/{name}.png", "label": f"/data/{name}_mask.png"} for name in names]


def _training(tmp_path, scores, max_epochs, resume=True, stop_after=None, scheduler=False, lr=0.1, settings=None,
              train_items=None, val_items=None, val_batches=(0,)):
    """A tiny trainer that sets its weights to the epoch number, validated by a scripted validator.

    With ``train_items`` / ``val_items``, the trainer's and the validator's loaders carry those data dicts.
    """
    torch.manual_seed(0)
    network = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(network.parameters(), lr=lr)
    save_dict = {"model": network, "optimizer": optimizer}
    if scheduler:
        save_dict["lr_scheduler"] = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    def step(engine, batch):
        optimizer.zero_grad()
        network(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        with torch.no_grad():
            network.weight.fill_(float(engine.state.epoch))

    trainer = Engine(step)
    validator = ScriptedValidator(scores, val_batches)
    if val_items is not None:
        validator.data_loader = ListLoader([0] * len(val_items), val_items)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: validator.validate(engine.state.epoch))
    if scheduler:
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: save_dict["lr_scheduler"].step())
    handler = TrainingCheckpoint(
        tmp_path / "state.pt", save_dict, validator=validator, best_file=tmp_path / "model.pt", resume=resume,
        **({} if settings is None else {"settings": settings}),
    )
    handler.attach(trainer)
    if stop_after is not None:
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=stop_after), lambda engine: engine.terminate())
    epochs = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: epochs.append(engine.state.epoch))
    trainer.run([0, 1] if train_items is None else ListLoader([0, 1], train_items), max_epochs=max_epochs)
    return trainer, validator, handler, epochs, save_dict


def _best_weight(tmp_path):
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(state) == {"weight", "bias"}  # a plain state dict of the network
    return float(state["weight"][0, 0])


def test_resume_restores_epoch_and_best_and_never_overwrites_the_best_with_a_worse_model(tmp_path):
    scores = [0.5, 0.8, 0.6, 0.7, 0.9, 0.1]
    # "killed" after epoch 3: the best so far is epoch 2 (0.8)
    _training(tmp_path, scores, max_epochs=6, stop_after=3)
    assert _best_weight(tmp_path) == 2.0
    trainer, validator, handler, epochs, _ = _training(tmp_path, scores, max_epochs=6)
    assert handler.resumed_from_epoch == 3 and epochs == [4, 5, 6], "did not continue after the saved epoch"
    # epoch 4 (0.7) is worse than the restored best 0.8 and must not replace model.pt; epoch 5 (0.9) does
    assert _best_weight(tmp_path) == 5.0
    assert (validator.state.best_metric, validator.state.best_metric_epoch) == (0.9, 5)
    assert trainer.state.epoch == 6
    state = load_checkpoint(tmp_path / "state.pt")
    assert state["trainer"]["iteration"] == 6 * 2 and state["best"]["validator"]["best_metric_epoch"] == 5


def test_worse_model_after_resume_keeps_the_best_file_untouched(tmp_path):
    _training(tmp_path, [0.9, 0.2, 0.3], max_epochs=3, stop_after=1)
    before = (tmp_path / "model.pt").read_bytes()
    _training(tmp_path, [0.9, 0.2, 0.3], max_epochs=3)
    assert (tmp_path / "model.pt").read_bytes() == before


def test_a_death_between_the_two_writes_of_a_best_epoch_is_repaired_on_resume(tmp_path):
    _training(tmp_path, [0.5, 0.8, 0.1], max_epochs=3, stop_after=2)
    # as if killed after the state of epoch 2 was written and before model.pt: model.pt is epoch 1's
    network = nn.Linear(2, 1)
    with torch.no_grad():
        network.weight.fill_(1.0)
    save_atomically(network.state_dict(), tmp_path / "model.pt")
    _, _, handler, epochs, _ = _training(tmp_path, [0.5, 0.8, 0.1], max_epochs=3)
    assert epochs == [3] and handler.resumed_from_epoch == 2
    assert _best_weight(tmp_path) == 2.0, "the best model of epoch 2 was lost"


def test_optimizer_and_scheduler_state_are_restored(tmp_path):
    _training(tmp_path, [0.1] * 4, max_epochs=4, stop_after=2, scheduler=True)
    saved = load_checkpoint(tmp_path / "state.pt")
    assert saved["lr_scheduler"]["last_epoch"] == 2 and saved["optimizer"]["param_groups"][0]["lr"] == 0.1 * 0.25
    _, _, _, epochs, save_dict = _training(tmp_path, [0.1] * 4, max_epochs=4, scheduler=True)
    assert epochs == [3, 4]
    assert save_dict["lr_scheduler"].last_epoch == 4
    assert save_dict["optimizer"].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)


def test_resume_false_starts_afresh_and_a_finished_run_does_nothing(tmp_path):
    _training(tmp_path, [0.5, 0.6], max_epochs=2)
    _, _, handler, epochs, _ = _training(tmp_path, [0.5, 0.6], max_epochs=2)
    assert epochs == [] and handler.resumed_from_epoch == 2  # already finished: nothing to train
    _, _, handler, epochs, _ = _training(tmp_path, [0.5, 0.6, 0.7], max_epochs=3)
    assert epochs == [3], "a larger max_epochs extends a finished run"
    _, _, handler, epochs, _ = _training(tmp_path, [0.5, 0.6], max_epochs=2, resume=False)
    assert epochs == [1, 2] and handler.resumed_from_epoch == 0


def test_a_best_model_without_a_state_is_not_written_over_unless_resume_is_false(tmp_path):
    """The bundle's recorded weights sit in models/ without a training state: a run started there would
    replace them after its first validation."""
    recorded = nn.Linear(2, 1).state_dict()
    torch.save(recorded, tmp_path / "model.pt")
    before = (tmp_path / "model.pt").read_bytes()
    with pytest.raises(CheckpointError, match=r"model\.pt: exists, but .*state\.pt does not.*--resume False"):
        _training(tmp_path, [0.5, 0.6], max_epochs=2)
    assert (tmp_path / "model.pt").read_bytes() == before and not (tmp_path / "state.pt").exists()
    # refused when attached, before any STARTED handler (TaiChiNet's preparation trains a U-Net++ there) runs
    trainer, started = Engine(lambda engine, batch: None), []
    trainer.add_event_handler(Events.STARTED, lambda engine: started.append(True))
    handler = TrainingCheckpoint(tmp_path / "state.pt", {"model": nn.Linear(2, 1)}, best_file=tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"model\.pt: exists"):
        handler.attach(trainer)
    assert started == []
    _, _, _, epochs, _ = _training(tmp_path, [0.5, 0.6], max_epochs=2, resume=False)
    assert epochs == [1, 2] and _best_weight(tmp_path) == 2.0


def test_unusable_state_files_give_errors_naming_the_file_and_the_fix(tmp_path):
    _training(tmp_path, [0.5, 0.6, 0.7], max_epochs=3)
    with pytest.raises(CheckpointError, match=r"state\.pt: holds epoch 3, beyond max_epochs 2; raise max_epochs"):
        _training(tmp_path, [0.5, 0.6], max_epochs=2)
    # a state written for another network
    state = load_checkpoint(tmp_path / "state.pt")
    state["model"] = nn.Linear(3, 1).state_dict()
    torch.save(state, tmp_path / "state.pt")
    with pytest.raises(
        CheckpointError, match=r"state\.pt: its 'model' does not fit this configuration.*--resume False"
    ):
        _training(tmp_path, [0.5] * 4, max_epochs=4)
    # truncated (as a non-atomic writer killed mid-write would leave it)
    data = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "state.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"state\.pt: not a readable PyTorch checkpoint.*truncated"):
        _training(tmp_path, [0.5] * 4, max_epochs=4)
    torch.save({"something": 1}, tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match="not a training state written by this version"):
        _training(tmp_path, [0.5] * 4, max_epochs=4)


def test_save_atomically_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = save_atomically({"a": torch.ones(3)}, tmp_path / "x.pt")
    assert oct(path.stat().st_mode & 0o044) == oct(0o044), "group and others should be able to read it"

    class Exploding:
        def __reduce__(self):  # fails in the middle of pickling, as a kill would interrupt the write
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_atomically({"a": torch.zeros(3), "b": Exploding()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"], "a temporary file was left behind"
    # what a kill -9 mid-write leaves is cleared by the next write; other files are left alone
    (tmp_path / ".x.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "tmp_notes.txt").write_text("mine")
    save_atomically({"a": torch.zeros(3)}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp_notes.txt", "x.pt"]


# ------------------------------------------------------------------- settings changed between run and resume


@pytest.mark.parametrize("value", ["false", "False", "no", 0, 1, None])
def test_resume_must_be_a_boolean_not_a_truthy_text(tmp_path, value):
    # `python -m monai.bundle run --resume false` passes the text 'false', which bool() took as True
    with pytest.raises(ValueError, match=r"resume: must be true or false, got .*--resume False"):
        _training(tmp_path, [0.5], max_epochs=1, resume=value)
    with pytest.raises(ConfigError, match=r"^resume: must be true or false, got .*write --resume False"):
        check_training_config(booleans={"resume": value})
    assert check_training_config(booleans={"resume": False, "amp": True})


def test_val_interval_beyond_max_epochs_is_refused_as_it_would_write_no_model():
    with pytest.raises(ConfigError, match=r"^val_interval: 5 is more than max_epochs 2: .*no\s+best model"):
        check_training_config(max_epochs=2, val_interval=5)
    assert check_training_config(max_epochs=2, val_interval=2)


def test_changed_image_size_is_refused_by_key_with_old_and_new_value_and_the_fix(tmp_path):
    settings = {"image_size": [32, 32], "learning_rate": 0.1}
    _training(tmp_path, [0.5, 0.8, 0.1], max_epochs=3, stop_after=2, settings=settings)
    state, best = (tmp_path / "state.pt").read_bytes(), (tmp_path / "model.pt").read_bytes()
    with pytest.raises(CheckpointError) as raised:
        changed = {**settings, "image_size": (64, 64), "split_seed": 1}
        _training(tmp_path, [0.5, 0.8, 0.1], max_epochs=3, settings=changed)
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'state.pt'}: holds a run trained with other settings"), message
    assert "image_size: was [32, 32], now [64, 64]" in message and "split_seed" not in message  # not stored before
    assert "new run folder" in message and "--resume False" in message
    # nothing was trained or written
    assert (tmp_path / "state.pt").read_bytes() == state and (tmp_path / "model.pt").read_bytes() == best
    # a tuple and a list of the same numbers are the same setting; --resume False starts afresh with the new one
    _, _, handler, epochs, _ = _training(tmp_path, [0.5, 0.8, 0.1], max_epochs=3, settings={**settings,
                                                                                            "image_size": (32, 32)})
    assert epochs == [3]
    _, _, handler, epochs, _ = _training(tmp_path, [0.5] * 3, max_epochs=3, resume=False,
                                         settings={**settings, "image_size": [64, 64]})
    assert epochs == [1, 2, 3] and load_checkpoint(tmp_path / "state.pt")["settings"]["image_size"] == [64, 64]


def test_changed_dataset_is_refused_and_a_moved_dataset_is_not(tmp_path):
    train, val = _items("a", "b", "c"), _items("d", "e")
    _training(tmp_path, [0.5, 0.8, 0.1], max_epochs=3, stop_after=1, train_items=train, val_items=val)
    assert load_checkpoint(tmp_path / "state.pt")["settings"]["dataset"]["validation"]["items"] == 2
    with pytest.raises(CheckpointError, match=r"dataset: the validation images differ \(2 then, 3 now\)"):
        _training(tmp_path, [0.5, 0.8, 0.1], max_epochs=3, train_items=train, val_items=_items("d", "e", "f"))
    with pytest.raises(CheckpointError, match=r"dataset: the training images differ \(as many, 3, but other files\)"):
        _training(tmp_path, [0.5, 0.8, 0.1], max_epochs=3, train_items=_items("a", "b", "x"), val_items=val)
    # the same files elsewhere (a moved or re-mounted dataset), in another order: the same data
    moved = [{key: path.replace("/data/", "/mnt/busi/") for key, path in item.items()} for item in train[::-1]]
    _, _, handler, epochs, _ = _training(tmp_path, [0.5, 0.8, 0.1], max_epochs=3, train_items=moved, val_items=val)
    assert handler.resumed_from_epoch == 1 and epochs == [2, 3]


def test_changed_learning_rate_is_applied_to_the_restored_optimizer_and_logged(tmp_path, caplog):
    _training(tmp_path, [0.1] * 4, max_epochs=4, stop_after=2, lr=0.1, settings={"learning_rate": 0.1})
    with caplog.at_level("INFO"):
        _, _, _, epochs, save_dict = _training(tmp_path, [0.1] * 4, max_epochs=4, lr=0.02,
                                               settings={"learning_rate": 0.02})
    assert epochs == [3, 4]
    assert save_dict["optimizer"].param_groups[0]["lr"] == pytest.approx(0.02), "the saved learning rate won"
    assert "learning_rate was 0.1, now 0.02: applied from epoch 3" in caplog.text
    assert load_checkpoint(tmp_path / "state.pt")["settings"]["learning_rate"] == 0.02
    assert RESUME_RULES["learning_rate"] == "apply" and RESUME_RULES["image_size"] == "refuse"


def test_changed_learning_rate_scales_a_schedule_that_keeps_its_progress(tmp_path):
    _training(tmp_path, [0.1] * 4, max_epochs=4, stop_after=2, scheduler=True, settings={"learning_rate": 0.1})
    _, _, _, _, save_dict = _training(tmp_path, [0.1] * 4, max_epochs=4, scheduler=True, lr=0.2,
                                      settings={"learning_rate": 0.2})
    # StepLR halves every epoch: 0.2 * 0.5 ** 4 after four epochs, as if the run had started with 0.2
    assert save_dict["optimizer"].param_groups[0]["lr"] == pytest.approx(0.2 * 0.5**4)
    assert save_dict["lr_scheduler"].base_lrs == [pytest.approx(0.2)]


def test_a_state_without_stored_settings_resumes_with_a_warning(tmp_path, caplog):
    _training(tmp_path, [0.5, 0.6], max_epochs=2, stop_after=1, settings={"image_size": [32, 32]})
    state = load_checkpoint(tmp_path / "state.pt")
    del state["settings"]  # as written by an earlier lesionseg
    torch.save(state, tmp_path / "state.pt")
    with caplog.at_level("WARNING"):
        _, _, _, epochs, _ = _training(tmp_path, [0.5, 0.6], max_epochs=2, settings={"image_size": [64, 64]})
    assert epochs == [2] and "written before lesionseg stored a run's settings" in caplog.text


LOSS_AND_NETWORK = {"image_size": [32, 32], "loss": {"alpha": 0.25, "gamma": 5.0}, "network_def": {"dropout": 0.0}}


def test_changed_loss_argument_is_refused_by_its_config_id_and_an_unchanged_one_resumes(tmp_path):
    # the model cards recommend --loss#alpha 0.5: added to the rerun of an interrupted α = 0.25 run, it mixed two
    # recipes in one model without a word
    _training(tmp_path, [0.5, 0.8, 0.1], max_epochs=3, stop_after=1, settings=LOSS_AND_NETWORK)
    stored = load_checkpoint(tmp_path / "state.pt")["settings"]
    assert stored["loss#alpha"] == 0.25 and stored["network_def#dropout"] == 0.0 and "loss" not in stored
    state = (tmp_path / "state.pt").read_bytes()
    with pytest.raises(CheckpointError) as raised:
        _training(tmp_path, [0.5, 0.8, 0.1], max_epochs=3,
                  settings={**LOSS_AND_NETWORK, "loss": {"alpha": 0.5, "gamma": 5.0}})
    message = str(raised.value)
    assert "\n  loss#alpha: was 0.25, now 0.5\n" in message and "gamma" not in message, message
    assert "new run folder" in message and "go back to the old values" in message and "--resume False" in message
    assert (tmp_path / "state.pt").read_bytes() == state
    _, _, handler, epochs, _ = _training(tmp_path, [0.5, 0.8, 0.1], max_epochs=3, settings=LOSS_AND_NETWORK)
    assert handler.resumed_from_epoch == 1 and epochs == [2, 3]


def test_changed_dropout_is_applied_and_logged(tmp_path, caplog):
    _training(tmp_path, [0.5, 0.8, 0.1], max_epochs=3, stop_after=1, settings=LOSS_AND_NETWORK)
    with caplog.at_level("INFO"):
        _, _, _, epochs, _ = _training(tmp_path, [0.5, 0.8, 0.1], max_epochs=3,
                                       settings={**LOSS_AND_NETWORK, "network_def": {"dropout": 0.3}})
    assert epochs == [2, 3] and "network_def#dropout was 0.0, now 0.3: applied from epoch 2" in caplog.text


def test_a_state_written_before_the_loss_was_stored_resumes_without_comparing_it(tmp_path, caplog):
    _training(tmp_path, [0.5, 0.8, 0.1], max_epochs=3, stop_after=1, settings=LOSS_AND_NETWORK)
    state = load_checkpoint(tmp_path / "state.pt")
    del state["settings"]["loss#alpha"]  # as written by a lesionseg that stored no loss arguments
    torch.save(state, tmp_path / "state.pt")
    with caplog.at_level("WARNING"):  # a warning, not a debug message: the user should see it
        _, _, handler, epochs, _ = _training(tmp_path, [0.5, 0.8, 0.1], max_epochs=3,
                                             settings={**LOSS_AND_NETWORK, "loss": {"alpha": 0.5, "gamma": 5.0}})
    assert handler.resumed_from_epoch == 1 and epochs == [2, 3]
    assert "written by an earlier version, without loss#alpha; resuming without comparing them" in caplog.text
    assert load_checkpoint(tmp_path / "state.pt")["settings"]["loss#alpha"] == 0.5  # compared from now on


@pytest.mark.parametrize("bundle", ["dcnet_bundle", "taichinet_bundle"])
def test_bundles_store_every_loss_argument_and_have_a_rule_for_each_setting(bundle):
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / bundle / "configs" / "train.yaml"))
    settings = TrainingCheckpoint(Path("state.pt"), {}, settings=parser.get_parsed_content("run_settings")).settings
    assert set(settings) <= set(RESUME_RULES), set(settings) - set(RESUME_RULES)
    # every argument of the loss: one changed on resume would silently change the recipe (TaiChiNet's `step` is
    # set by its easy-to-hard schedule, from easy_to_hard and step2_start_epoch)
    arguments = set(inspect.signature(pydoc.locate(parser.get("loss#_target_"))).parameters) - {"step"}
    assert {f"loss#{name}" for name in arguments} <= set(settings), arguments
    assert settings["network_def#dropout"] == 0.0 and RESUME_RULES["network_def#dropout"] == "apply"
    if bundle == "dcnet_bundle":  # max / avg pooling and the woB / woF ablations have the same parameters
        assert {"network_def#pooling", "network_def#ablation"} <= set(settings)
        assert RESUME_RULES["network_def#pooling"] == RESUME_RULES["network_def#ablation"] == "refuse"


def test_empty_validation_data_is_an_error_before_training(tmp_path):
    with pytest.raises(
        ValueError, match=r"the validation data is empty: the best model .*model\.pt.* never be written"
    ):
        _training(tmp_path, [0.5], max_epochs=1, train_items=_items("a"), val_items=[])
    assert not (tmp_path / "state.pt").exists() and not (tmp_path / "model.pt").exists()


def test_a_validation_without_any_lesion_is_an_error_after_the_first_epoch(tmp_path):
    # every model scores alike on empty masks (Dice 0), so model.pt silently kept epoch 1 whatever came later
    empty, lesion = torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)
    lesion[0, 1, 1] = 1
    normal_only = [[{"label": empty}, {"label": empty}], {"label": torch.zeros(2, 1, 4, 4)}]
    with pytest.raises(
        ValueError, match=r"the validation data has no lesion: every 'label' mask is empty.*first epoch"
    ):
        _training(tmp_path, [0.0] * 3, max_epochs=3, val_batches=normal_only)
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "state.pt").exists()
    _, validator, _, epochs, _ = _training(tmp_path, [0.1, 0.2, 0.3], max_epochs=3,
                                           val_batches=[*normal_only, [{"label": empty}, {"label": lesion}]])
    assert epochs == [1, 2, 3] and validator.state.best_metric_epoch == 3


# ------------------------------------------------------------------------- kill -9 through the real bundles


def _command(bundle: Path, data: Path, root: Path, max_epochs: int, extra: dict) -> list[str]:
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.yaml"]
    command += ["--meta_file", "configs/metadata.json", "--logging_file", "configs/logging.conf"]
    command += ["--bundle_root", str(bundle), "--dataset_dir", str(data), "--max_epochs", str(max_epochs)]
    command += ["--ckpt_dir", str(root / "models"), "--output_dir", str(root / "train")]
    for key, value in {**TINY, **extra}.items():
        command += [f"--{key}", json.dumps(value)]
    return command


def _saved_epoch(state_file: Path) -> int:
    trainer = load_checkpoint(state_file)["trainer"]
    return trainer["iteration"] // trainer["epoch_length"]


def _kill_during_an_epoch_then_resume(bundle: Path, data: Path, root: Path, max_epochs: int, extra: dict) -> tuple:
    command = _command(bundle, data, root, max_epochs, extra)
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    state_file = root / "models" / "training_state.pt"
    log = root / "first.log"
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=bundle, env=environment, stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            saved_epoch = None
            while time.monotonic() < deadline and process.poll() is None:
                if saved_epoch is None and state_file.is_file():
                    saved_epoch = _saved_epoch(state_file)
                # kill in the middle of the epoch after the checkpoint: once its first iteration is logged
                if saved_epoch is not None and f"Epoch: {saved_epoch + 1}/{max_epochs}, Iter: 1/" in log.read_text():
                    break
                time.sleep(0.02)
            assert process.poll() is None, "training ended before it could be killed:\n" + log.read_text()[-3000:]
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == -signal.SIGKILL
    killed_at = _saved_epoch(state_file)
    assert 1 <= killed_at < max_epochs
    before = (root / "models" / "model.pt").read_bytes()

    result = subprocess.run(command, cwd=bundle, env=environment, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert f"epoch {killed_at} of {max_epochs} done, continuing with epoch {killed_at + 1}" in output, output[-3000:]
    assert f"Epoch: {killed_at + 1}/{max_epochs}, Iter: 1/" in output
    assert f"Epoch: 1/{max_epochs}," not in output, "the restarted run trained from epoch 1 again"
    assert not list((root / "models").glob(".*.tmp")), "a temporary file of the killed run was left behind"
    final = load_checkpoint(state_file)
    assert _saved_epoch(state_file) == max_epochs
    assert final["best"]["validator"]["best_metric_epoch"] >= 1
    if final["best"]["validator"]["best_metric_epoch"] <= killed_at:
        assert (root / "models" / "model.pt").read_bytes() == before, "a worse model replaced the best one"
    return killed_at, output, torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("resume") / "data", num_images=10, seed=3, size=(40, 48),
                                 progress=False)


@pytest.mark.slow
def test_dcnet_training_killed_during_an_epoch_resumes_from_its_checkpoint(phantoms, tmp_path):
    _, _, state = _kill_during_an_epoch_then_resume(BUNDLES / "dcnet_bundle", phantoms, tmp_path, 5, {})
    DCNet(features=TINY["network_def#features"]).load_state_dict(state)


@pytest.mark.slow
def test_taichinet_training_killed_during_an_epoch_resumes_from_its_checkpoint(phantoms, tmp_path):
    extra = {"prepare_overrides": TINY_PREPARATION, "prepare_dir": str(tmp_path / "easy_hard"),
             "step2_start_epoch": 3}
    killed_at, output, state = _kill_during_an_epoch_then_resume(
        BUNDLES / "taichinet_bundle", phantoms, tmp_path, 5, extra
    )
    # the restarted run reused the easy/hard parts and took up the curriculum at the resumed epoch
    assert "reusing them without training" in output
    if killed_at < 3:
        assert "epoch 3: easy-to-hard step 2" in output
    else:
        assert "easy-to-hard step 2" in output and "epoch 3: easy-to-hard" not in output
    TaiChiNet(features=TINY["network_def#features"]).load_state_dict(state)


# --------------------------------------------------------- changed settings and bad values through the bundles


def _cause(error: BaseException, kind: type) -> BaseException:
    # MONAI wraps an error of a config expression; find the one lesionseg raised
    while not isinstance(error, kind) and (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    assert isinstance(error, kind), error
    return error


@pytest.mark.parametrize("bundle", ["dcnet_bundle", "taichinet_bundle"])
def test_bundles_refuse_true_false_settings_given_as_text(bundle, tmp_path):
    """`--resume false` on MONAI's command line is the text 'false': refused by key before any data is read."""
    from bundle_testing import make_workflow

    workflow = make_workflow(BUNDLES / bundle, ["train"], "train", dataset_dir=str(tmp_path / "none"),
                             ckpt_dir=str(tmp_path / "models"), prepare_dir=str(tmp_path / "easy_hard"),
                             resume="false", tensorboard="False ", cpu_reuse_freed_memory="true", **TINY)
    with pytest.raises(Exception) as raised:
        workflow.initialize()
    lines = str(_cause(raised.value, ConfigError)).splitlines()
    assert [line.split(":")[0] for line in lines] == ["resume", "tensorboard", "cpu_reuse_freed_memory"], lines
    assert "--resume False" in lines[0]
    assert not (tmp_path / "models").exists() and not (tmp_path / "easy_hard").exists()


def _dcnet_training(data, root, **overrides):
    from bundle_testing import make_workflow

    settings = {**TINY, "dataset_dir": str(data), "ckpt_dir": str(root / "models"), "output_dir": str(root / "train"),
                "tensorboard": False, "max_epochs": 1, **overrides}
    workflow = make_workflow(BUNDLES / "dcnet_bundle", ["train"], "train", **settings)
    workflow.initialize()
    workflow.run()
    return workflow


@pytest.mark.slow
def test_dcnet_bundle_refuses_a_changed_image_size_dataset_or_loss_and_applies_a_changed_learning_rate(
    phantoms, tmp_path, capfd
):
    _dcnet_training(phantoms, tmp_path, learning_rate=3e-4)
    state = (tmp_path / "models" / "training_state.pt").read_bytes()
    stored = load_checkpoint(tmp_path / "models" / "training_state.pt")["settings"]
    assert {key for key in stored} <= set(RESUME_RULES) and stored["dataset"]["validation"]["items"] == 2
    with pytest.raises(Exception) as raised:
        _dcnet_training(phantoms, tmp_path, max_epochs=2, image_size=[64, 64])
    assert "image_size: was [32, 32], now [64, 64]" in str(_cause(raised.value, CheckpointError))
    with pytest.raises(Exception) as raised:
        _dcnet_training(phantoms, tmp_path, max_epochs=2, val_fraction=0.3)
    message = str(_cause(raised.value, CheckpointError))
    assert "val_fraction: was 0.2, now 0.3" in message and "dataset: the validation images differ" in message
    # the model card's --loss#alpha 0.5 added to the rerun of an α = 0.25 run, and a network option without parameters
    changed = {"loss#alpha": 0.5, "network_def#normalise_products": False}
    with pytest.raises(Exception) as raised:
        _dcnet_training(phantoms, tmp_path, max_epochs=2, **changed)
    message = str(_cause(raised.value, CheckpointError))
    assert "loss#alpha: was 0.25, now 0.5" in message
    assert "network_def#normalise_products: was True, now False" in message
    assert (tmp_path / "models" / "training_state.pt").read_bytes() == state, "a refused resume wrote the state"
    capfd.readouterr()
    workflow = _dcnet_training(phantoms, tmp_path, max_epochs=2, learning_rate=1e-3)
    assert "learning_rate was 0.0003, now 0.001: applied from epoch 2" in "".join(capfd.readouterr())
    assert workflow.trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3) and workflow.trainer.state.epoch == 2


def test_dcnet_bundle_refuses_an_empty_validation_section_before_training(phantoms, tmp_path):
    from lesionseg.data.datalist import write_datalist
    from lesionseg.data.io import DataError
    from lesionseg.data.readers import read_dataset

    datalist = write_datalist(tmp_path / "list.json", {"training": read_dataset(phantoms)[:4], "validation": []})
    with pytest.raises(Exception) as raised:
        _dcnet_training(datalist, tmp_path)
    error = _cause(raised.value, DataError)
    assert str(error).startswith(f"{datalist}: section 'validation' is empty") and "models/model.pt" in str(error)
    assert not (tmp_path / "models").exists()
