"""Datasets for visual attention, torchvision-style.

- MNIST with a seeded held-out validation split (:func:`load_mnist`).
- Translated and cluttered MNIST (Mnih et al. 2014, "Recurrent Models of Visual
  Attention") and multi-digit MNIST (Ba et al. 2015, "Multiple Object Recognition with
  Visual Attention"), generated vectorised and cached (:mod:`glimpse.data.synthetic`);
  the DRAM paper's digit pairs among distractors (:mod:`glimpse.data.pairs`).
- CUB-200-2011 with boxes and parts (Wah et al. 2011) and joint transforms that move
  them with the image (:mod:`glimpse.data.cub`, :mod:`glimpse.data.transforms`).
- Any of them as one tensor on a device, drawn in shuffled or sequential order
  (:class:`ImageSource`, :class:`IndexStream`; :mod:`glimpse.data.source`).

Raw data lives under :func:`default_root` (``$GLIMPSE_DATA`` or ``./data``), generated
data under :func:`cache_dir` (``$GLIMPSE_CACHE`` or ``~/.cache/glimpse``).
"""

from glimpse.data.cub import CUB200
from glimpse.data.mnist import MNISTSplit, load_mnist
from glimpse.data.pairs import DigitPairsMNIST, pair_index
from glimpse.data.paths import DatasetNotFoundError, cache_dir, default_root
from glimpse.data.registry import DATASETS, get_dataset
from glimpse.data.source import ImageSource, IndexStream
from glimpse.data.synthetic import ClutteredMNIST, MultiMNIST, TranslatedMNIST, left_to_right
from glimpse.data.twodigit import TwoDigitMNIST

__all__ = [
    "CUB200",
    "DATASETS",
    "ClutteredMNIST",
    "DatasetNotFoundError",
    "DigitPairsMNIST",
    "ImageSource",
    "IndexStream",
    "MNISTSplit",
    "MultiMNIST",
    "TranslatedMNIST",
    "TwoDigitMNIST",
    "cache_dir",
    "default_root",
    "get_dataset",
    "left_to_right",
    "load_mnist",
    "pair_index",
]
