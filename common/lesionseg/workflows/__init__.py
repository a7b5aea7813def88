"""What runs whole workflows: a bundle workflow (:mod:`~lesionseg.workflows.bundle`), a predictor loaded from a
bundle or an exported model (:mod:`~lesionseg.workflows.predictor`), predicting a folder
(:mod:`~lesionseg.workflows.predict`), the cross-validation loop (:mod:`~lesionseg.workflows.crossval`),
TaiChiNet's easy/hard preparation run (:mod:`~lesionseg.workflows.easy_hard`) and the phantoms demo
(:mod:`~lesionseg.workflows.demo`).

The command line (:mod:`lesionseg.cli`), the benchmarks, the tests and the model-zoo export use this layer; it
imports :mod:`lesionseg.engines` and the layers below, never :mod:`lesionseg.cli`. It ships in an exported
bundle's ``scripts/``.
"""
