"""Ultrasound data: readers, datalists, loading transforms, near-duplicate groups, splits and integrity checks.

The phantom simulator is a subpackage of its own, :mod:`lesionseg.data.phantoms`, imported only where it is
used: importing :mod:`lesionseg.data` or any of its modules does not load it.
"""

from lesionseg.data.datalist import read_datalist, write_datalist
from lesionseg.data.grouping import find_groups, load_groups
from lesionseg.data.integrity import Problem, check_dataset, inspect_dataset
from lesionseg.data.io import DataError, read_image, read_mask
from lesionseg.data.readers import read_busi, read_dataset, read_folder_pair, read_images
from lesionseg.data.splits import (
    datalist_section,
    kfold_split,
    make_datalist,
    select_classes,
    train_val_test_split,
)
from lesionseg.data.transforms import LoadUltrasound, LoadUltrasoundd

__all__ = [
    "DataError",
    "LoadUltrasound",
    "LoadUltrasoundd",
    "Problem",
    "check_dataset",
    "datalist_section",
    "find_groups",
    "inspect_dataset",
    "kfold_split",
    "load_groups",
    "select_classes",
    "make_datalist",
    "read_busi",
    "read_datalist",
    "read_dataset",
    "read_folder_pair",
    "read_image",
    "read_images",
    "read_mask",
    "train_val_test_split",
    "write_datalist",
]
