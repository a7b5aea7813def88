"""The app's tasks: MONAI Label's bundle training with the overrides MONAI Label needs, the epistemic scoring
(dropout alone on, images already scored by the current model skipped) and the epistemic strategy that refuses
to choose before any image was scored."""

from __future__ import annotations

import logging
import os

import torch
from fastapi import HTTPException
from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.activelearning.epistemic import Epistemic
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.scoring.epistemic_v2 import EpistemicScoring
from monailabel.tasks.train.bundle import BundleTrainTask

logger = logging.getLogger(__name__)

#: bundle config ids set for every MONAI Label training, when the bundle's train config defines them:
#: - resume: MONAI Label fine-tunes models/model.pt on every training; resuming would find the finished
#:   training state of the previous one and stop at once, or refuse a datalist that gained labels;
#: - easy_to_hard: TaiChiNet's easy/hard preparation mines the dataset folder, and MONAI Label passes a datalist
#:   (the ground truth alone then trains the network, the paper's Model 7).
TRAINING_OVERRIDES = {"resume": False, "easy_to_hard": False}


class LesionBundleTrainTask(BundleTrainTask):
    """MONAI Label's ``BundleTrainTask`` with ``TRAINING_OVERRIDES`` added to the bundle run's overrides (the
    served copy's YAML is left as it is)."""

    def _update_overrides(self, overrides):
        for key, value in TRAINING_OVERRIDES.items():
            if key in self.bundle_config.config:  # type: ignore[operator]
                overrides[key] = value
        return overrides


class ScoredEpistemic(Epistemic):
    """MONAI Label's ``Epistemic`` strategy (the unlabelled image of highest ``key``) that raises an error naming
    the scoring to run when no unlabelled image has a score yet, instead of choosing among scores of 0.

    Args:
        key: the datastore image info key of the scores (written by the scoring method ``scoring``).
        scoring: the scoring method's name, for the error message.
    """

    def __init__(self, key: str, scoring: str):
        super().__init__(key=key, desc=f"The unlabelled image of highest epistemic entropy of {scoring}")
        self.scoring = scoring

    def __call__(self, request, datastore: Datastore):
        images = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
        if images and not any(self.key in datastore.get_image_info(i) for i in images):
            # an HTTP error carries its message to the client (MONAI Label answers other exceptions with a bare 500)
            raise HTTPException(
                status_code=409,
                detail=f"no unlabelled image has an {self.key} score yet: run POST /scoring/{self.scoring} first "
                "(the server also scores at start-up and after each training)",
            )
        return super().__call__(request, datastore)


class LesionInferTask(BundleInferTask):
    """MONAI Label's ``BundleInferTask`` whose masks come back as PNG whatever the image's format (MONAI Label
    writes a result in its image's format, and a JPEG's compression would blur the mask's 0/1 values), unless
    the request names a ``result_extension``."""

    def writer(self, data, extension=None, dtype=None):
        if extension is None and not data.get("result_extension"):
            extension = ".png"
        return super().writer(data, extension=extension, dtype=dtype)


class DropoutInferTask(BundleInferTask):
    """MONAI Label's ``BundleInferTask`` for Monte Carlo dropout: the network in evaluation mode but for its
    dropout layers. MONAI Label's ``train_mode=True`` puts the whole network in training mode, so that each
    BatchNorm layer normalises the one image by its own statistics instead of the running ones: the scores would
    then measure another function than the served model's, whatever the dropout."""

    def _get_network(self, device, data):
        network = super()._get_network(device, data)
        if network is not None:
            network.eval()
            for module in network.modules():
                if isinstance(module, torch.nn.modules.dropout._DropoutNd):
                    module.train()
        return network


class _UnscoredImages:
    """``datastore`` whose unlabelled images leave out those whose ``key`` is ``model_ts`` (scored by the current
    model); everything else is the datastore's own."""

    def __init__(self, datastore: Datastore, key: str, model_ts: int):
        self._datastore, self._key, self._model_ts = datastore, key, model_ts

    def get_unlabeled_images(self, *args, **kwargs):
        images = self._datastore.get_unlabeled_images(*args, **kwargs)
        return [i for i in images if self._datastore.get_image_info(i).get(self._key) != self._model_ts]

    def __getattr__(self, name):
        return getattr(self._datastore, name)


class BundleEpistemicScoring(EpistemicScoring):
    """MONAI Label's ``EpistemicScoring`` that skips the images the current model has already scored, by its own
    ``key_output_ts``.

    MONAI Label 0.8.5 writes each image's scoring time to ``key_output_ts`` but skips by the fixed key
    ``epistemic_ts``: with one key per bundle it skipped nothing, so each run scored every image again and
    ``max_samples`` scored the same first images every time, the others never. The skip is made here, before
    MONAI Label's own loop, with the model file's time as MONAI Label computes it.
    """

    def __call__(self, request, datastore: Datastore):
        model_file = self.infer_task.get_path()
        model_ts = int(os.stat(model_file).st_mtime) if model_file and os.path.exists(model_file) else 1
        unscored = _UnscoredImages(datastore, self.key_output_ts, model_ts)
        logger.info(
            f"EPISTEMIC:: {self.key_output_ts}: {len(datastore.get_unlabeled_images())} unlabelled images, "
            f"{len(unscored.get_unlabeled_images())} not yet scored by the current model"
        )
        return super().__call__(request, unscored)
