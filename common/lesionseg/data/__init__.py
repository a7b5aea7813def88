"""Ultrasound data: readers, loading transforms, phantoms, grouped splits and integrity checks."""

from lesionseg.data.integrity import Problem, check_dataset, inspect_dataset
from lesionseg.data.io import DataError, read_image, read_mask
from lesionseg.data.phantoms import KINDS, Phantom, PhantomConfig, contact_sheet, make_phantom, write_phantom_dataset
from lesionseg.data.readers import (
    read_busi,
    read_datalist,
    read_dataset,
    read_folder_pair,
    read_images,
    write_datalist,
)
from lesionseg.data.splits import (
    datalist_section,
    find_groups,
    kfold_split,
    load_groups,
    make_datalist,
    select_classes,
    train_val_test_split,
)
from lesionseg.data.transforms import LoadUltrasound, LoadUltrasoundd

__all__ = [
    "KINDS",
    "Phantom",
    "PhantomConfig",
    "contact_sheet",
    "make_phantom",
    "write_phantom_dataset",
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
