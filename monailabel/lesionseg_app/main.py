"""MONAI Label app serving the lesionseg bundles (DC-Net, TaiChiNet): automatic segmentation, training on the
submitted labels, epistemic (Monte Carlo dropout) scoring and the epistemic active-learning strategy.

Start it with ``monailabel/start.sh --studies DIR`` (docs/monailabel.md). Options (``--conf KEY VALUE``):

- ``bundles``: folder of the bundle folders to serve (default: the repository's ``bundles/``);
- ``models``: the bundles to serve, comma separated (default ``dcnet_bundle,taichinet_bundle``);
- ``model_dir``: folder of the served copies, which training rewrites (default: ``model/`` in this app);
- ``epistemic_simulation_size`` (5), ``epistemic_dropout`` (0.2), ``epistemic_max_samples`` (0: all):
  the scoring's dropout-on predictions per image, the networks' dropout then, and the images scored per run;
- ``skip_trainers``, ``skip_scoring``: ``true`` leaves training or scoring out.

Scoring method ``<bundle>`` writes the image info ``epistemic_entropy_<bundle>``; strategy ``epistemic_<bundle>``
picks the unlabelled image with the highest, and ``epistemic`` is that of the first served bundle.
"""

from __future__ import annotations

import logging
import os
from importlib.metadata import version
from pathlib import Path
from typing import Dict

from lib.served import bundle_names, prepare_served_bundles
from lib.tasks import (
    BundleEpistemicScoring,
    DropoutInferTask,
    LesionBundleTrainTask,
    LesionInferTask,
    ScoredEpistemic,
)
from monai.transforms import AsDiscreted, Invertd, SaveImaged
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.generic import strtobool

from lesionseg.data.layout import ToXYMaskd

logger = logging.getLogger(__name__)

#: the repository's bundles/ (this file is monailabel/lesionseg_app/main.py)
REPOSITORY_BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


class LesionSegApp(MONAILabelApp):
    """The lesionseg bundles in MONAI Label, configured by ``conf`` (see the module docstring)."""

    def __init__(self, app_dir, studies, conf):
        source = Path(conf.get("bundles") or REPOSITORY_BUNDLES).expanduser()
        self.model_dir = Path(conf.get("model_dir") or os.path.join(app_dir, "model")).expanduser()
        self.models = prepare_served_bundles(source, self.model_dir, bundle_names(conf.get("models")))
        self.epistemic_max_samples = int(conf.get("epistemic_max_samples", "0"))
        self.epistemic_simulation_size = int(conf.get("epistemic_simulation_size", "5"))
        self.epistemic_dropout = float(conf.get("epistemic_dropout", "0.2"))
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="lesionseg: breast ultrasound lesion segmentation (DC-Net, TaiChiNet)",
            description="The lesionseg MONAI bundles: segmentation, training, epistemic active learning",
            version=version("monailabel"),
        )

    def init_infers(self) -> Dict[str, InferTask]:
        infers: Dict[str, InferTask] = {}
        for name, path in self.models.items():
            task = LesionInferTask(path, self.conf)
            if not task.is_valid():
                raise ValueError(f"{path}: MONAI Label cannot load this bundle for inference (see the log above)")
            logger.info(f"+++ Adding Inferer:: {name} => {task}")
            infers[name] = task
        return infers

    def init_trainers(self) -> Dict[str, TrainTask]:
        trainers: Dict[str, TrainTask] = {}
        if strtobool(self.conf.get("skip_trainers", "false")):
            return trainers
        for name, path in self.models.items():
            task = LesionBundleTrainTask(path, self.conf)
            if task.is_valid():
                logger.info(f"+++ Adding Trainer:: {name} => {task}")
                trainers[name] = task
        return trainers

    def init_scoring_methods(self) -> Dict[str, ScoringMethod]:
        methods: Dict[str, ScoringMethod] = {}
        if strtobool(self.conf.get("skip_scoring", "false")):
            return methods
        for name, path in self.models.items():
            # the bundle's inference with the networks' dropout on (the rest in evaluation mode), and without
            # its writer, inversion, threshold and source-size mask: the entropy is of the mean lesion
            # probability at the network's size, not of thresholded votes
            task = DropoutInferTask(
                path,
                self.conf,
                skip_writer=True,
                dropout=self.epistemic_dropout,
                post_filter=[SaveImaged, Invertd, AsDiscreted, ToXYMaskd],
            )
            methods[name] = BundleEpistemicScoring(
                task,
                max_samples=self.epistemic_max_samples,
                simulation_size=self.epistemic_simulation_size,
                # one key per bundle: the bundles' scores (and the times that skip images already scored by the
                # current model) do not overwrite each other
                key_output_entropy=f"epistemic_entropy_{name}",
                key_output_ts=f"epistemic_ts_{name}",
            )
            logger.info(f"+++ Adding Scoring Method:: {name} => {path}")
        return methods

    def init_strategies(self) -> Dict[str, Strategy]:
        strategies: Dict[str, Strategy] = {"random": Random(), "first": First()}
        if strtobool(self.conf.get("skip_scoring", "false")):
            return strategies
        for name in self.models:
            strategies[f"epistemic_{name}"] = ScoredEpistemic(key=f"epistemic_entropy_{name}", scoring=name)
        first = next(iter(self.models))
        strategies["epistemic"] = ScoredEpistemic(key=f"epistemic_entropy_{first}", scoring=first)
        logger.info(f"Active Learning Strategies:: {list(strategies)}")
        return strategies
