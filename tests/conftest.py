"""Shared fixtures.

``tiny_busi`` (function scope) writes a tiny dataset in the BUSI layout and returns its folder
(``<tmp_path>/busi/Dataset_BUSI_with_GT``, holding ``benign/``, ``malignant/`` and ``normal/``); beside it,
``<tmp_path>/busi/near_duplicate_groups.json`` groups the one near-duplicate pair. Images are 48 x 64
(H x W) smooth random textures, distinct per case, each with a dark rectangular lesion. It covers the
file variants of the real data:

==================  ===========  ==========================================================
case                image        mask file(s)
==================  ===========  ==========================================================
benign (1)          8-bit gray   1-bit
benign (2)          RGB (a red   two files, ``_mask.png`` and ``_mask_1.png`` (8-bit, 0/255),
                    annotation)  one lesion each; the lesion mask is their union
benign (3)          8-bit gray   RGBA (white lesion on opaque black)
benign (4)          8-bit gray   1-bit; a near-duplicate of benign (1) (same scan, light noise)
malignant (1)       8-bit gray   8-bit gray 0/255
malignant (2)       8-bit gray   1-bit
normal (1), (2)     8-bit gray   RGB, all zero (no lesion)
==================  ===========  ==========================================================

``tiny_busi_lesions`` gives, for each case, the ``(row0, row1, col0, col1)`` rectangles (one per mask
file, half-open) its masks mark, so a test can build the expected union.

``busi_dir`` (session scope) is the real BUSI development subset's ``Dataset_BUSI_with_GT`` folder in
``../shared/data/busi`` beside the repository checkout; it skips the test when the folder is absent.
Tests using it are marked ``@pytest.mark.busi``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BUSI_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "busi"

# Hypothesis: every run, CI's and a developer's, tries the same examples (derandomized, no example database), so a
# failure reproduces on any machine and a pass means the same everywhere. HYPOTHESIS_PROFILE=explore searches with
# fresh random examples instead (and remembers failures in .hypothesis/); add each failure it finds as an @example.
try:
    from hypothesis import settings
except ImportError:  # the MONAI Label environment runs tests/monailabel, which need no hypothesis
    pass
else:
    settings.register_profile("reproducible", derandomize=True, database=None, print_blob=True)
    settings.register_profile("explore", derandomize=False)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "reproducible"))


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The suite's tensors are tiny: threads gain nothing, and on a busy 2-core machine a multi-threaded kernel
    waits at an OpenMP barrier for a descheduled thread, which makes small models many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

TINY_SHAPE = (48, 64)

# case -> (class, rectangles (row0, row1, col0, col1), one per mask file)
TINY_BUSI_LESIONS = {
    "benign (1)": ("benign", [(10, 20, 12, 30)]),
    "benign (2)": ("benign", [(5, 15, 5, 20), (25, 40, 35, 60)]),
    "benign (3)": ("benign", [(20, 35, 20, 44)]),
    "benign (4)": ("benign", [(10, 20, 12, 30)]),
    "malignant (1)": ("malignant", [(8, 30, 30, 50)]),
    "malignant (2)": ("malignant", [(30, 44, 6, 26)]),
    "normal (1)": ("normal", []),
    "normal (2)": ("normal", []),
}


def _texture(seed: int) -> np.ndarray:
    """A smooth random 8-bit texture: coarse noise, bilinearly enlarged to TINY_SHAPE."""
    coarse = np.random.default_rng(seed).uniform(40, 200, size=(6, 8)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize(TINY_SHAPE[::-1], Image.Resampling.BILINEAR))


def _rect_mask(rectangle: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros(TINY_SHAPE, dtype=bool)
    r0, r1, c0, c1 = rectangle
    mask[r0:r1, c0:c1] = True
    return mask


def write_tiny_busi(root: Path) -> Path:
    """Write the dataset described in the module docstring under ``root``; returns the class-folder root."""
    dataset = root / "busi" / "Dataset_BUSI_with_GT"
    for klass in ("benign", "malignant", "normal"):
        (dataset / klass).mkdir(parents=True)
    for seed, (case, (klass, rectangles)) in enumerate(TINY_BUSI_LESIONS.items()):
        folder = dataset / klass
        image = _texture(seed)
        if case == "benign (4)":
            noise = np.random.default_rng(99).integers(-3, 4, size=TINY_SHAPE)
            image = np.clip(_texture(0).astype(int) + noise, 0, 255)
        for rectangle in rectangles:
            image = np.where(_rect_mask(rectangle), image * 0.3, image)
        image = image.astype(np.uint8)
        if case == "benign (2)":
            rgb = np.repeat(image[..., None], 3, axis=-1)
            rgb[2, :, :] = (255, 0, 0)  # a coloured annotation line, as BUSI's RGB images carry
            Image.fromarray(rgb, "RGB").save(folder / f"{case}.png")
        else:
            Image.fromarray(image, "L").save(folder / f"{case}.png")
        masks = [_rect_mask(r) for r in rectangles] or [np.zeros(TINY_SHAPE, dtype=bool)]
        for index, mask in enumerate(masks):
            path = folder / (f"{case}_mask.png" if index == 0 else f"{case}_mask_{index}.png")
            if klass == "normal":
                Image.fromarray(np.zeros((*TINY_SHAPE, 3), dtype=np.uint8), "RGB").save(path)
            elif case in ("benign (1)", "benign (4)", "malignant (2)"):
                Image.fromarray(mask).save(path)  # bool array -> 1-bit PNG
            elif case == "benign (3)":
                rgba = np.zeros((*TINY_SHAPE, 4), dtype=np.uint8)
                rgba[..., 3] = 255
                rgba[mask, :3] = 255
                Image.fromarray(rgba, "RGBA").save(path)
            else:
                Image.fromarray(mask.astype(np.uint8) * 255, "L").save(path)
    groups = {"description": "tiny test dataset", "groups": [["benign (1)", "benign (4)"]]}
    (root / "busi" / "near_duplicate_groups.json").write_text(json.dumps(groups))
    return dataset


@pytest.fixture
def tiny_busi(tmp_path: Path) -> Path:
    """A tiny BUSI-layout dataset (see the module docstring); returns its ``Dataset_BUSI_with_GT`` folder."""
    return write_tiny_busi(tmp_path)


@pytest.fixture
def tiny_busi_lesions() -> dict[str, tuple[str, list[tuple[int, int, int, int]]]]:
    """Case -> (class, lesion rectangles ``(row0, row1, col0, col1)``, one per mask file) of ``tiny_busi``."""
    return {case: (klass, list(rectangles)) for case, (klass, rectangles) in TINY_BUSI_LESIONS.items()}


@pytest.fixture(scope="session")
def busi_dir() -> Path:
    """The real BUSI ``Dataset_BUSI_with_GT`` folder; skips the test when it is absent."""
    dataset = BUSI_ROOT / "Dataset_BUSI_with_GT"
    if not dataset.is_dir():
        pytest.skip(f"real BUSI data not found at {dataset}")
    return dataset


@pytest.fixture
def single_process_group(monkeypatch):
    """The environment torchrun gives a world of one process (gloo on the CPU); the group is destroyed after the
    test, when the test made one."""
    import socket

    import ignite.distributed
    import torch.distributed as dist

    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(name, value)
    # a port the system has just handed out, so that two test runs on one machine do not collide
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MASTER_PORT", str(probe.getsockname()[1]))
    yield
    if dist.is_initialized():
        dist.destroy_process_group()
    # ignite caches the distributed context it last saw; without this, later workflows still ask the destroyed group
    ignite.distributed.sync()
