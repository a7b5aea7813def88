"""lesionseg: DC-Net and TaiChiNet ultrasound lesion segmentation for MONAI.

Layers (each may import only what is below it):

1. :mod:`lesionseg.cli` — the ``lesionseg`` command: argument parsing over :mod:`lesionseg.workflows` (and
   :mod:`lesionseg.deploy`, :mod:`lesionseg.data` for the data commands); nothing imports it.
2. :mod:`lesionseg.workflows` — whole runs: a bundle workflow, a predictor, predicting a folder, the
   cross-validation loop, TaiChiNet's easy/hard preparation run, the phantoms demo; :mod:`lesionseg.deploy` —
   TorchScript, ONNX and model-zoo bundle exports.
3. :mod:`lesionseg.engines` — training-time helpers the bundles call.
4. :mod:`lesionseg.networks.nets`, :mod:`lesionseg.losses`, :mod:`lesionseg.metrics`,
   :mod:`lesionseg.data` — independent of each other.
5. :mod:`lesionseg.networks.blocks` — torch and MONAI only.

:mod:`lesionseg.utils` (file and override helpers) may be imported by every layer and imports none.
"""

__version__ = "0.3.0"
