"""What the skew guard asks each image: a Python one-liner that lists its interpreter and distributions.

Shared by the renderer (a Dockerfile stage runs it with the image's own Python) and the guard (which runs
it in a container when no build stage did), so that neither imports the other.
"""

from __future__ import annotations

INVENTORY_SCRIPT = (  # one line, so that a Dockerfile can run it; prints, or writes to the file in argv[1]
    "import importlib.metadata as m, json, pathlib, re, sys; "
    "packages = {re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): d.version for d in m.distributions()}; "
    "text = json.dumps({'python': '%d.%d.%d' % sys.version_info[:3], 'packages': packages}, sort_keys=True); "
    "pathlib.Path(sys.argv[1]).write_text(text) if sys.argv[1:] else print(text)"
)
INVENTORY_FILE = "inventory.json"


def inventory_stage(stage: str) -> str:
    """The Dockerfile stage that holds nothing but `stage`'s inventory, as INVENTORY_FILE."""
    return f"{stage}-inventory"
