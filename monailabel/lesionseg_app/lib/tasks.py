"""The app's tasks: MONAI Label's bundle training with the overrides MONAI Label needs, and the epistemic
strategy that refuses to choose before any image was scored."""

from __future__ import annotations

import logging

from fastapi import HTTPException
from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.activelearning.epistemic import Epistemic
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
