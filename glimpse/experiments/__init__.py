"""The top floor of glimpse: experiments over the trained models of every package.

The only part of :mod:`glimpse` that imports the packages above the ground floor
(:mod:`envs`, :mod:`agents`, :mod:`soft_baselines`); nothing below imports it (an
import-linter contract in ``pyproject.toml``, run by ``tests/test_import_contract.py``).

- :mod:`glimpse.experiments.compare`: hard versus soft attention on the same data;
- :mod:`glimpse.experiments.playback`: TensorBoard, GIF and MP4 playback of a run;
- :mod:`glimpse.experiments.evaluate`: re-evaluating a hard run under other protocols;
- :mod:`glimpse.experiments.curves`: learning curves on the env-step axis;
- :mod:`glimpse.experiments.attention_maps`: where a hard run looks, as data.

The results tables (:mod:`glimpse.results`) stay on the ground floor: they read
``metrics.json`` files only, and the trainers use its provenance helpers.
"""
