"""Does the first glimpse show where the digit is? ``python scripts/probe_location.py --help``.

Fits a small MLP from the first glimpse of every training image (at the centre, or with
``--first-fixation random`` at a seeded random location) to the centre of its digit's frame
and scores it on test images, for every scale alone and for all scales
(``glimpse.experiments.probe``): a test of what RAM's location policy could steer by.
Examples::

    python scripts/probe_location.py --task cluttered100 --out runs/probe-cluttered100.json
    python scripts/probe_location.py --task cluttered60 --train-images 5000 --epochs 10
"""

from __future__ import annotations

import json
from typing import Any

from glimpse.experiments.probe import ProbeConfig, run_probe
from glimpse.training import cli_main, parse_config


def main(args: list[str] | None = None) -> dict[str, Any]:
    result = run_probe(parse_config(ProbeConfig, args, description=__doc__))
    print(json.dumps(result, indent=2, sort_keys=True))
    return result


if __name__ == "__main__":
    cli_main(main)
