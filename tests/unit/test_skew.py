"""The skew guard's comparison (the inventory itself runs in real images in the integration tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mreg.errors import SkewError
from mreg.guards.skew import ImageEnvironment, check_environments
from mreg.lock import Lock
from mreg.spec import load_spec
from tests.support import make_lock

PINS = {
    "base": {"numpy": "1.26.4"},
    "train": {"numpy": "1.26.4", "pandas": "2.1.4"},
    "serve": {"numpy": "1.26.4", "fastapi": "0.109.0"},
    "tools": {"uv": "0.13.9"},
}


@pytest.fixture
def lock(tmp_path: Path) -> Lock:
    (tmp_path / "registry.toml").write_text('[model]\nname = "m"\n')
    return make_lock(load_spec(tmp_path / "registry.toml"), PINS)


def env(packages: dict[str, str], python: str = "3.11.2") -> ImageEnvironment:
    return ImageEnvironment(python=python, packages=packages)


def test_matching_images_pass(lock: Lock) -> None:
    check_environments({"train": env(PINS["train"]), "serve": env({**PINS["serve"], "pip": "24.0"})}, lock)


def test_every_difference_is_named(lock: Lock) -> None:
    train = env({"numpy": "1.26.4", "pandas": "2.1.4", "six": "1.16.0"})
    serve = env({"numpy": "1.26.3", "fastapi": "0.109.0", "six": "1.17.0"}, python="3.11.4")
    with pytest.raises(SkewError) as caught:
        check_environments({"train": train, "serve": serve}, lock)
    assert caught.value.exit_code == 7
    assert str(caught.value).splitlines() == [
        "train/serve skew: the images do not hold the same versions:",
        "  - Python is 3.11.2 in the train image but 3.11.4 in the serve image",
        "  - numpy is 1.26.4 in the train image but 1.26.3 in the serve image",
        "  - six is 1.16.0 in the train image but 1.17.0 in the serve image",
        "  - the serve image has numpy 1.26.3, the lock pins 1.26.4",
    ]


def test_an_image_missing_a_locked_distribution_fails(lock: Lock) -> None:
    with pytest.raises(SkewError, match=r"the train image lacks pandas \(the lock pins 2.1.4\)"):
        check_environments({"train": env({"numpy": "1.26.4"})}, lock)
