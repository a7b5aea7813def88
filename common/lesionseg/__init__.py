"""lesionseg: DC-Net and TaiChiNet ultrasound lesion segmentation for MONAI.

Layers (each may import only what is below it):

1. :mod:`lesionseg.cli` — the ``lesionseg`` command.
2. :mod:`lesionseg.engines` — training-time helpers the bundles call; :mod:`lesionseg.deploy` — TorchScript,
   ONNX and model-zoo bundle exports.
3. :mod:`lesionseg.networks.nets`, :mod:`lesionseg.losses`, :mod:`lesionseg.metrics`,
   :mod:`lesionseg.data` — independent of each other.
4. :mod:`lesionseg.networks.blocks` — torch and MONAI only.
"""

__version__ = "0.2.0"
