"""The unit test that ``lesionseg export-bundle`` ships with a bundle, in the model zoo's pattern.

The model zoo keeps one test file a bundle, ``ci/unit_tests/test_<bundle name>.py`` at the zoo's root, which
its ``ci/unit_tests/runner.py -b <bundle name>`` runs with :mod:`unittest` (in the order its ``test_order``
gives: training first, then evaluation, then inference). Each test builds a ``monai.bundle.ConfigWorkflow``
and runs ``initialize`` -> ``check_properties()`` -> ``run`` -> ``finalize`` on a small synthetic dataset
that it writes itself, so it needs no download and no GPU.

:func:`render_unit_test` fills :data:`UNIT_TEST_TEMPLATE` for one bundle; the export then formats it with isort
and black under the zoo's settings, like the vendored code, and the zoo's flake8 settings pass it.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence

__all__ = ["UNIT_TEST_TEMPLATE", "render_unit_test", "python_literal"]

UNIT_TEST_TEMPLATE = string.Template('''\
# Copyright (c) lesionseg contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""Unit test of the ${name} bundle in the model zoo's pattern (written by lesionseg export-bundle).

Trains, evaluates and runs inference with the bundle's configs on a few synthetic 48x64 images, on the CPU,
offline. From the zoo's root:

    python ci/unit_tests/runner.py -b ${name}

or ``python -m pytest`` on this file. Everything the workflows write goes to temporary folders, not into the
bundle.
"""

import os
import shutil
import sys
import tempfile
import unittest

import numpy as np
from monai.bundle import ConfigWorkflow
from PIL import Image

BUNDLE_NAME = "${name}"
# the zoo's layout: models/<bundle name> beside the ci/ folder that holds this file
BUNDLE_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "models", BUNDLE_NAME))
# small enough for a CPU in seconds: tiny images and network, no worker processes
${overrides}
# added to the training and evaluation workflows
${train_overrides}
# the folder ids the workflows write into, pointed at a temporary folder each
${output_ids}


def test_order(test_name1, test_name2):
    def get_order(name):
        if "train" in name:
            return 1
        if "eval" in name:
            return 2
        if "infer" in name:
            return 3
        return 4

    return get_order(test_name1) - get_order(test_name2)


class ${class_name}(unittest.TestCase):
    def setUp(self):
        # the configs import the bundle's scripts package while they are parsed, before a workflow's run adds it
        if BUNDLE_ROOT not in sys.path:
            sys.path.insert(0, BUNDLE_ROOT)
        self.dataset_dir = tempfile.mkdtemp()
        self.output_dir = tempfile.mkdtemp()
        # BUSI's layout: <class>/<class> (n).png with <class>/<class> (n)_mask.png; a darker square lesion
        rng = np.random.default_rng(0)
        for class_name in ("benign", "malignant"):
            os.makedirs(os.path.join(self.dataset_dir, class_name))
            for index in range(1, 6):
                image = rng.integers(96, 256, size=(48, 64)).astype(np.uint8)
                mask = np.zeros((48, 64), dtype=np.uint8)
                top, left = rng.integers(4, 20), rng.integers(4, 36)
                mask[top : top + 20, left : left + 24] = 255
                image[mask > 0] //= 3
                stem = os.path.join(self.dataset_dir, class_name, f"{class_name} ({index})")
                Image.fromarray(image).save(f"{stem}.png")
                Image.fromarray(mask).save(f"{stem}_mask.png")

    def tearDown(self):
        shutil.rmtree(self.dataset_dir)
        shutil.rmtree(self.output_dir)

    def workflow(self, config_names, workflow_type, **override):
        folders = {key: os.path.join(self.output_dir, key) for key in OUTPUT_IDS}
        return ConfigWorkflow(
            workflow_type=workflow_type,
            config_file=[os.path.join(BUNDLE_ROOT, "configs", f"{name}.yaml") for name in config_names],
            logging_file=os.path.join(BUNDLE_ROOT, "configs", "logging.conf"),
            meta_file=os.path.join(BUNDLE_ROOT, "configs", "metadata.json"),
            bundle_root=BUNDLE_ROOT,
            dataset_dir=self.dataset_dir,
            **{**OVERRIDES, **folders, **override},
        )

    def check_workflow(self, workflow):
        workflow.initialize()
        missing = workflow.check_properties()
        self.assertFalse(missing, f"required ids missing: {missing}")
        workflow.run()
        workflow.finalize()

    def test_train_eval_config(self):
        self.check_workflow(self.workflow(["train"], "train", **TRAIN_OVERRIDES))
        self.assertTrue(os.path.isfile(os.path.join(self.output_dir, "ckpt_dir", "model.pt")))
        # evaluate.yaml overrides train.yaml, so the workflow type stays "train"
        self.check_workflow(self.workflow(["train", "evaluate"], "train", **TRAIN_OVERRIDES))
        self.assertTrue(os.path.isfile(os.path.join(self.output_dir, "output_dir", "summary.json")))

    def test_infer_config(self):
        # random weights: load_pretrain False skips models/model.pt, which the zoo downloads separately
        self.check_workflow(self.workflow(["inference"], "infer", load_pretrain=False))
        written = [name for _, _, names in os.walk(os.path.join(self.output_dir, "output_dir")) for name in names]
        self.assertEqual(len([name for name in written if name.endswith("_mask.png")]), 10)


if __name__ == "__main__":
    loader = unittest.TestLoader()
    loader.sortTestMethodsUsing = test_order
    unittest.main(testLoader=loader)
''')


def python_literal(value: object) -> str:
    """``value`` (JSON-like: dict, list, str, int, float, bool, None) as a one-line Python literal, black's way.

    Strings are written with double quotes, as black writes them; tuples become lists.

    Example:
        >>> python_literal({"image_size": [32, 32], "resume": False, "name": None})
        '{"image_size": [32, 32], "resume": False, "name": None}'
    """
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{python_literal(k)}: {python_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(python_literal(v) for v in value) + "]"
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, (int, float, str)):
        return json.dumps(value)  # double-quoted strings; ints and floats as Python writes them
    raise TypeError(f"no Python literal for {type(value).__name__}: {value!r}")


def _assignment(name: str, value: Mapping | Sequence) -> str:
    """``NAME = <literal>`` on one line; black, which the export runs on the test, splits it where it is too long."""
    return f"{name} = {python_literal(value)}"


def render_unit_test(
    name: str,
    overrides: Mapping[str, object],
    train_overrides: Mapping[str, object],
    output_ids: Sequence[str] = ("ckpt_dir", "output_dir"),
) -> str:
    """The text of ``ci/unit_tests/test_<name>.py`` for the bundle ``name``.

    Args:
        name: the bundle's name in the zoo (its folder ``models/<name>``).
        overrides: config id -> value for every workflow (e.g. tiny ``image_size`` and network widths).
        train_overrides: config id -> value added for training and evaluation (e.g. ``max_epochs``).
        output_ids: the config ids of the folders the workflows write into; the test points each at its own
            temporary folder (``<tmp>/<id>``). The checkpoint must land in ``ckpt_dir/model.pt`` and the
            evaluation's ``summary.json`` and the inference masks in ``output_dir``.
    """
    class_name = "Test" + "".join(part[:1].upper() + part[1:] for part in name.split("_"))
    return UNIT_TEST_TEMPLATE.substitute(
        name=name,
        class_name=class_name,
        overrides=_assignment("OVERRIDES", dict(overrides)),
        train_overrides=_assignment("TRAIN_OVERRIDES", dict(train_overrides)),
        output_ids=_assignment("OUTPUT_IDS", list(output_ids)),
    )
