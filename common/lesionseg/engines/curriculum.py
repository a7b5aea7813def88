"""The epoch schedule of TaiChiNet's easy-to-hard training, as an ignite handler."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from os import PathLike
from typing import Any, Protocol

import numpy as np
import torch
from ignite.engine import Engine, Events

__all__ = ["EasyToHardHandler"]

_STEP_TARGETS = {1: "easy part E_p", 2: "hard part H_p, complementary loss on"}


class SteppedLoss(Protocol):
    """A loss with a settable easy-to-hard ``step`` (1 or 2), such as :class:`lesionseg.losses.TaiChiNetLoss`."""

    step: int


class EasyToHardHandler:
    """
    Ignite handler that runs step 1 and then step 2 of TaiChiNet's easy-to-hard strategy in one training run
    (Wang et al., IEEE JBHI 2024, Sec. IV-C, Eq. 20–22, Fig. 6): "E_p is used to warm the network at the
    first step, whereas the second one focuses on H_p. The weights are shared in the two steps."

    At every ``EPOCH_STARTED`` it sets ``loss.step`` from the epoch about to run (ignite counts epochs from 1):
    step 1 before ``step2_start_epoch``, step 2 from it on. The step is derived from
    ``engine.state.epoch`` each time rather than remembered, so a run resumed from a checkpoint (which
    restores ``engine.state.epoch``, e.g. MONAI's ``CheckpointLoader`` with the trainer in its ``load_dict``)
    continues in the right step, whatever step a fresh loss object starts in. The paper does not say when to
    switch; the bundle's default is the second half of the epochs.

    With ``prepare``, the easy and hard parts are made (or found) when the run starts, not when the workflow
    is built: at ``STARTED`` (once per handler) it calls ``prepare()``, which returns the preparation's
    datalist (:func:`lesionseg.workflows.easy_hard.run_preparation`), and gives each item of the training
    dataset its ``easy`` and ``hard`` masks (:func:`lesionseg.engines.easy_hard.with_parts`, then
    ``dataset.set_data``, which a ``CacheDataset`` caches again, or ``dataset.data``). The random
    generators (Python, NumPy, PyTorch) are restored afterwards: training starts from the same random state
    whether the parts had to be made or were reused.

    Args:
        loss: the loss whose ``step`` to set; ``None`` uses the engine's ``loss_function`` (MONAI's
            ``SupervisedTrainer``).
        step2_start_epoch: first epoch (1-based) of step 2; ``None`` never switches (the loss stays in step 1).
        name: name of the ``logging.Logger`` to log the switch to; ``None`` uses ``engine.logger``.
        prepare: ``None`` (the items already have their parts, or none are needed), or a function without
            arguments that makes or finds the parts and returns the path of their datalist.
        dataset: the training dataset to give the parts to (a MONAI ``Dataset``: its ``data`` is replaced,
            with ``set_data`` where it has one); ``None`` uses ``engine.data_loader.dataset``.

    Raises:
        ValueError: ``step2_start_epoch`` is not a positive integer or ``None``.

    Example:
        >>> from ignite.engine import Engine
        >>> from lesionseg.losses import TaiChiNetLoss
        >>> loss = TaiChiNetLoss()
        >>> trainer = Engine(lambda engine, batch: loss.step)
        >>> EasyToHardHandler(loss, step2_start_epoch=3).attach(trainer)
        >>> steps = []
        >>> _ = trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: steps.append(engine.state.output))
        >>> _ = trainer.run([0], max_epochs=4)
        >>> steps
        [1, 1, 2, 2]
    """

    def __init__(
        self,
        loss: SteppedLoss | None = None,
        step2_start_epoch: int | None = None,
        name: str | None = None,
        prepare: Callable[[], str | PathLike] | None = None,
        dataset: Any = None,
    ) -> None:
        if step2_start_epoch is not None and (
            isinstance(step2_start_epoch, bool) or not isinstance(step2_start_epoch, int) or step2_start_epoch < 1
        ):
            raise ValueError(f"step2_start_epoch must be a positive integer or None, got {step2_start_epoch!r}")
        self.loss = loss
        self.step2_start_epoch = step2_start_epoch
        self.logger = logging.getLogger(name)
        self._name = name
        if prepare is not None and not callable(prepare):
            raise TypeError(f"prepare must be a function returning the parts' datalist, got {prepare!r}")
        self.prepare = prepare
        self.dataset = dataset
        self._prepared = False

    def step_for_epoch(self, epoch: int) -> int:
        """The easy-to-hard step of a (1-based) epoch."""
        return 2 if self.step2_start_epoch is not None and epoch >= self.step2_start_epoch else 1

    def attach(self, engine: Engine) -> None:
        """
        Args:
            engine: the trainer.
        """
        if self._name is None:
            self.logger = engine.logger
        if not engine.has_event_handler(self.started, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self.started)
        if not engine.has_event_handler(self, Events.EPOCH_STARTED):
            engine.add_event_handler(Events.EPOCH_STARTED, self)

    def _loss(self, engine: Engine) -> SteppedLoss:
        loss = self.loss if self.loss is not None else getattr(engine, "loss_function", None)
        if not hasattr(loss, "step"):
            raise TypeError(
                f"EasyToHardHandler needs a loss with a 'step' attribute (TaiChiNetLoss), got {type(loss).__name__}"
            )
        return loss

    def started(self, engine: Engine) -> None:
        """Make or find the easy/hard parts (with ``prepare``) and log the schedule when the run starts (or resumes)."""
        self._loss(engine)
        if self.prepare is not None and not self._prepared:
            self._give_parts(engine)
        start, max_epochs = self.step2_start_epoch, engine.state.max_epochs
        if start is None and self.prepare is None:
            # TaiChiNet's easy_to_hard: false; a datalist that already carries parts would still give them
            self.logger.info(
                "easy-to-hard off: no parts prepared, no step 2 (TaiChiNetLoss on the lesion mask alone is Eq. 13: "
                "no part terms, the complementary term in every epoch)"
            )
        elif start is None:
            self.logger.info("easy-to-hard: no step 2 scheduled, the loss stays in step 1")
        elif max_epochs is not None and start > max_epochs:
            self.logger.warning(
                f"easy-to-hard: step 2 starts at epoch {start}, after the last epoch ({max_epochs}); "
                "training stays in step 1 (easy part E_p)"
            )
        elif start == 1:
            self.logger.info(f"easy-to-hard: step 2 ({_STEP_TARGETS[2]}) from the first epoch, no step 1")
        else:
            self.logger.info(
                f"easy-to-hard: step 1 ({_STEP_TARGETS[1]}) for epochs 1-{start - 1}, "
                f"step 2 ({_STEP_TARGETS[2]}) for epochs {start}-{max_epochs}"
            )

    def __call__(self, engine: Engine) -> None:
        """
        Args:
            engine: the trainer; ``engine.state.epoch`` is the epoch about to run.
        """
        loss = self._loss(engine)
        step = self.step_for_epoch(engine.state.epoch)
        if loss.step != step:
            loss.step = step
            self.logger.info(f"epoch {engine.state.epoch}: easy-to-hard step {step} ({_STEP_TARGETS[step]})")

    def _give_parts(self, engine: Engine) -> None:
        # imported here: easy_hard imports MONAI's bundle machinery, which the schedule alone does not need
        from lesionseg.engines.easy_hard import with_parts

        dataset = self.dataset if self.dataset is not None else engine.data_loader.dataset
        states = random.getstate(), np.random.get_state()
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        # the preparation seeds and draws from the global generators; the training's draws stay as they were
        with torch.random.fork_rng(devices=devices):
            try:
                datalist = self.prepare()
            finally:
                random.setstate(states[0])
                np.random.set_state(states[1])
        items = with_parts(dataset.data, datalist)
        if hasattr(dataset, "set_data"):
            dataset.set_data(items)  # a CacheDataset caches them again
        else:
            dataset.data = items
        self._prepared = True
        self.logger.info(f"easy-to-hard: {len(dataset.data)} training items with their easy/hard parts from {datalist}")
