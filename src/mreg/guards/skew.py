"""The train/serve skew guard: ask each built image what it holds, and refuse any difference.

Each image is asked for its Python version and every installed distribution: with BuildKit, by a stage
of the same build that runs the inventory on the image's file system (`inventory_stage`), else by a short
container with no network. A distribution in both images must have the same version in both, both
images must run the same Python, and each image must hold exactly the versions its lock set pins.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from mreg._inventory import INVENTORY_FILE, INVENTORY_SCRIPT
from mreg.engine import Engine
from mreg.errors import EngineError, SkewError
from mreg.lock import Lock
from mreg.spec import Stage


class ImageEnvironment(BaseModel):
    """What one image runs: its Python version and its installed distributions (normalised names)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    python: str
    packages: dict[str, str]


def inspect_image(engine: Engine, image: str) -> ImageEnvironment:
    """Run the inventory inside `image` (its virtualenv's `python`) and parse what it prints."""
    return _parse_inventory(engine.run(image, ["python", "-c", INVENTORY_SCRIPT]), image)


def read_inventory(directory: Path, image: str) -> ImageEnvironment:
    """The inventory of `image` that its build exported into `directory`."""
    try:
        output = (directory / INVENTORY_FILE).read_text()
    except OSError as exc:
        raise EngineError(f"the build of {image} exported no inventory: {exc}.") from exc
    return _parse_inventory(output, image)


def _parse_inventory(output: str, image: str) -> ImageEnvironment:
    """The environment in the inventory's output (its last line)."""
    try:
        return ImageEnvironment.model_validate_json(output.strip().splitlines()[-1])
    except (IndexError, ValidationError, json.JSONDecodeError) as exc:
        raise EngineError(f"{image} did not report its installed distributions; it printed: {output[-500:]!r}") from exc


def check_environments(environments: Mapping[Stage, ImageEnvironment], lock: Lock) -> None:
    """Raise SkewError naming every distribution whose version differs between images or from the lock."""
    problems: list[str] = []
    train, serve = environments.get("train"), environments.get("serve")
    if train is not None and serve is not None:
        if train.python != serve.python:
            problems.append(f"Python is {train.python} in the train image but {serve.python} in the serve image")
        for name in sorted(set(train.packages) & set(serve.packages)):
            if train.packages[name] != serve.packages[name]:
                problems.append(
                    f"{name} is {train.packages[name]} in the train image but {serve.packages[name]} in the serve image"
                )
    for stage, environment in environments.items():
        for name, version in lock.pins(stage).items():
            installed = environment.packages.get(name)
            if installed is None:
                problems.append(f"the {stage} image lacks {name} (the lock pins {version})")
            elif installed != version:
                problems.append(f"the {stage} image has {name} {installed}, the lock pins {version}")
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise SkewError(f"train/serve skew: the images do not hold the same versions:\n{listed}")
