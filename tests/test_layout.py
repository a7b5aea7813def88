"""ToXYMaskd (masks in MONAI's (x, y) order for MONAI Label's writer) and PrimaryOutputInferer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from lesionseg.data.layout import ToXYMaskd
from lesionseg.engines import PrimaryOutputInferer
from lesionseg.networks.nets import DCNet, TaiChiNet


def _image(height: int, width: int) -> MetaTensor:
    return MetaTensor(torch.zeros(1, height, width), meta={"spatial_shape": np.array([height, width])})


def test_mask_at_source_size_is_transposed_to_uint8():
    mask = (torch.rand(1, 5, 7) > 0.5).float()
    image = _image(5, 7)
    out = ToXYMaskd("pred")({"pred": mask, "image": image})
    assert out["pred"].dtype == torch.uint8 and tuple(out["pred"].shape) == (7, 5)
    np.testing.assert_array_equal(out["pred"].numpy(), mask[0].numpy().T.astype(np.uint8))
    assert out["image"].meta["spatial_shape"].tolist() == [7, 5]
    assert image.meta["spatial_shape"].tolist() == [5, 7], "the input's metadata must stay as it was"


def test_mask_at_network_size_is_resized_to_the_source_by_nearest_neighbour():
    mask = torch.zeros(1, 4, 4)
    mask[0, :2, :] = 1.0  # top half
    out = ToXYMaskd("pred")({"pred": mask, "image": _image(8, 6)})
    expected = np.zeros((8, 6), dtype=np.uint8)
    expected[:4] = 1
    np.testing.assert_array_equal(out["pred"].numpy(), expected.T)


def test_bad_input_names_the_key():
    with pytest.raises(ValueError, match="'pred'.*\\(2, 4, 4\\)"):
        ToXYMaskd("pred")({"pred": torch.zeros(2, 4, 4), "image": _image(4, 4)})
    with pytest.raises(KeyError, match="'image'.*spatial_shape"):
        ToXYMaskd("pred")({"pred": torch.zeros(1, 4, 4), "image": torch.zeros(1, 4, 4)})


@pytest.mark.parametrize(
    "net", [DCNet(features=(2, 4, 8, 16, 32), dropout=0.5), TaiChiNet(features=(2, 4, 8, 16, 32), dropout=0.5)]
)
def test_inferer_returns_the_lesion_map_in_training_mode(net):
    """MONAI Label's MC-dropout scoring runs net.train(): the inferer still returns one lesion map, the first
    element of the network's training tuple, with dropout active."""
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.manual_seed(1)
        tuple_out = net.train()(x)
        torch.manual_seed(1)
        inferred = PrimaryOutputInferer()(x, net)
        assert isinstance(tuple_out, tuple) and torch.equal(inferred, tuple_out[0])
        assert tuple(inferred.shape) == (1, 1, 32, 32)
        net.eval()
        assert torch.equal(PrimaryOutputInferer()(x, net), net(x))
