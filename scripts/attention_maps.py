"""Where a run looks: ``python scripts/attention_maps.py --help``.

Plays a hard run's agent on a split (one episode per image, the policy's mean locations),
or runs a soft run's model (its module's map and Grad-CAM), through
``glimpse.experiments.where``; writes the fixations, maps and box scores to an ``.npz``
(layout in ``glimpse/experiments/attention_maps.py``) and prints the summary. Examples::

    python scripts/attention_maps.py runs/ram-cluttered60 --split test --out maps.npz
    python scripts/attention_maps.py runs/ram-translated60 --limit 1000 --scales all
"""

from __future__ import annotations

import json
from typing import Any

from glimpse.experiments.attention_maps import AttentionMapsConfig, export_attention_maps
from glimpse.training import cli_main, parse_config


def main(args: list[str] | None = None) -> dict[str, Any]:
    summary = export_attention_maps(parse_config(AttentionMapsConfig, args, description=__doc__))
    print(json.dumps(summary, indent=2, sort_keys=True))
    return summary


if __name__ == "__main__":
    cli_main(main)
