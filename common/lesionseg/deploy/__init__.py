"""Where users run the networks outside a training run: TorchScript and ONNX files, model-zoo bundle folders.

Layering: ``cli -> deploy -> networks``; nothing here imports ``lesionseg.cli``.
"""

from lesionseg.deploy.networks import DYNAMIC_AXES, check_close, export_onnx, export_torchscript, onnx_session

__all__ = ["DYNAMIC_AXES", "check_close", "export_onnx", "export_torchscript", "onnx_session"]
