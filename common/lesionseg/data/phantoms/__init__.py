"""Synthetic breast-ultrasound phantoms: B-mode-like images with lesion masks, written in the BUSI layout.

The phantoms stand in for real data wherever real data cannot go (tests, demos, continuous integration) and
are built so that the segmentation problem of the DC-Net and TaiChiNet papers stays real:

- an echogenicity map of the breast in layers (skin, subcutaneous fat, fibroglandular tissue, retromammary
  fat, pectoralis muscle, chest wall with the occasional rib) whose boundaries undulate;
- background structures that are as dark as lesions (fat lobules, ducts, ribs, attenuation at depth) next
  to bright ones (Cooper's ligaments, fascia, glandular strands), so that intensity alone does not find the
  lesion;
- hypoechoic lesions: benign ones oval or gently lobulated, parallel to the skin, either anechoic cysts or
  solid and homogeneous, with posterior acoustic enhancement; malignant ones irregular or spiculated,
  heterogeneous, possibly taller than wide, with an echogenic halo and posterior acoustic shadowing;
- imaging physics: shadows and enhancement integrate attenuation along the beam (down the columns),
  time-gain compensation leaves depth-dependent gain, and fully developed speckle (a complex Gaussian field
  blurred by an anisotropic point-spread function, whose intensity is averaged over neighbouring looks as
  compounding scanners do) multiplies the echo, i.e. adds to it after log compression to a fixed dynamic
  range.

Everything is vectorised numpy/scipy and drawn from one :class:`numpy.random.Generator`, so one seed gives
byte-identical images. A 256 x 256 phantom takes about 40 ms of CPU time.

Modules, each importing only those before it: :mod:`~lesionseg.data.phantoms.config` (the settings),
:mod:`~lesionseg.data.phantoms.drawing` (random fields and shapes), :mod:`~lesionseg.data.phantoms.anatomy`
(the breast's layers and structures), :mod:`~lesionseg.data.phantoms.lesion` (benign and malignant lesions),
:mod:`~lesionseg.data.phantoms.render` (one phantom: tissue, lesions, speckle) and
:mod:`~lesionseg.data.phantoms.dataset` (a dataset in the BUSI layout, contact sheets).
"""

from lesionseg.data.phantoms.config import KINDS, PhantomConfig
from lesionseg.data.phantoms.dataset import contact_sheet, write_phantom_dataset
from lesionseg.data.phantoms.render import Phantom, make_phantom

__all__ = ["KINDS", "PhantomConfig", "Phantom", "make_phantom", "write_phantom_dataset", "contact_sheet"]
