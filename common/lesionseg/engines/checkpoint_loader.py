"""The bundles' checkpoint loader: MONAI's, with the project's errors for a damaged or code-carrying file."""

from __future__ import annotations

import pickle
from pathlib import Path

from ignite.engine import Engine
from monai.handlers import CheckpointLoader

from lesionseg.engines.checkpoint import _load_error

__all__ = ["WeightsOnlyCheckpointLoader"]


class WeightsOnlyCheckpointLoader(CheckpointLoader):
    """MONAI's :class:`~monai.handlers.CheckpointLoader` (which loads with ``weights_only=True``) with the
    errors of :func:`lesionseg.engines.load_checkpoint`.

    A damaged or code-carrying ``load_path`` is reported as a :class:`~lesionseg.engines.CheckpointError` that
    names the file and says that the project refuses files with pickled code and why, instead of PyTorch's
    message, which advises ``weights_only=False`` (running the file's code). The bundles' ``inference.yaml``
    and ``evaluate.yaml`` use its subclass :class:`lesionseg.engines.FiniteCheckpointLoader`, which also refuses
    NaN or infinite weights. Arguments as :class:`~monai.handlers.CheckpointLoader`.
    """

    def __call__(self, engine: Engine) -> None:
        path = Path(self.load_path)
        try:
            super().__call__(engine)
        except (pickle.UnpicklingError, EOFError) as error:  # what torch.load raises for the file's content
            raise _load_error(path, error) from None
        except RuntimeError as error:  # a truncated zip-format checkpoint; weights that do not fit pass through
            if "PytorchStreamReader" not in str(error):
                raise
            raise _load_error(path, error) from None
