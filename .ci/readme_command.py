"""Print the README's test command: the first line of the ```bash block that follows the
``<!-- test-command -->`` marker (``.ci/run`` runs it literally; a test checks it)."""

from __future__ import annotations

import sys
from pathlib import Path

MARKER = "<!-- test-command -->"


def readme_command(readme: Path) -> str:
    lines = readme.read_text().splitlines()
    try:
        start = lines.index(MARKER)
    except ValueError:
        sys.exit(f"error: {readme} has no {MARKER} line")
    rest = lines[start + 1 :]
    if not rest or rest[0].strip() != "```bash" or len(rest) < 3 or rest[2].strip() != "```":
        sys.exit(f"error: {MARKER} in {readme} must be followed by a one-line ```bash block")
    return rest[1].strip()


if __name__ == "__main__":
    print(readme_command(Path(__file__).resolve().parent.parent / "README.md"))
