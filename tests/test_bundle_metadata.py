"""Each bundle's metadata.json requires the lesionseg it ships with: a bundle run against an older lesionseg
could lack an option its configs use (DC-Net's product normalisation is a 0.3.0 option)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lesionseg

BUNDLES = sorted((Path(__file__).resolve().parents[1] / "bundles").glob("*/configs/metadata.json"))


def test_both_bundles_are_found():
    assert [path.parents[1].name for path in BUNDLES] == ["dcnet_bundle", "taichinet_bundle"]


@pytest.mark.parametrize("metadata", BUNDLES, ids=lambda path: path.parents[1].name)
def test_metadata_requires_the_package_version_it_ships_with(metadata):
    required = json.loads(metadata.read_text())["required_packages_version"].get("lesionseg")
    assert required == lesionseg.__version__, f"{metadata}: requires lesionseg {required}"
