"""Training-time helpers that the bundles call and MONAI lacks."""

from lesionseg.engines.outputs import primary_output

__all__ = ["primary_output"]
