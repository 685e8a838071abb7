"""Glimpse: visual attention in deep learning, hard and soft, side by side.

Core pieces:

- :mod:`glimpse.retina` -- batched foveated multi-scale glimpses (Mnih et al. 2014).
- :mod:`glimpse.data` -- MNIST, translated / cluttered / multi-digit MNIST, CUB-200-2011.
- :mod:`glimpse.tasks` -- the task table: each task's data, classes, targets and glimpse defaults.
- :mod:`glimpse.viz` -- glimpse-trajectory rendering (frames, GIFs, TensorBoard playback).
"""

__version__ = "0.1.0"
