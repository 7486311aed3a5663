"""Private index URLs: read from the environment or a file, handed to uv by environment, masked in output."""

from __future__ import annotations

from pathlib import Path

import pytest

from mreg.errors import InvalidInputError
from mreg.indexes import PackageIndexes


def test_urls_come_from_the_environment_or_a_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "extra-index"
    secret_file.write_text("https://ci:tok-from-file@pypi.example/simple\n")
    indexes = PackageIndexes.from_environment(
        {"MREG_INDEX_URL": "https://mirror.example/simple", "MREG_EXTRA_INDEX_URL_FILE": str(secret_file)}
    )
    assert indexes.urls == {
        "mreg-index-url": "https://mirror.example/simple",
        "mreg-extra-index-url": "https://ci:tok-from-file@pypi.example/simple",
    }
    assert indexes.uv_environment() == {
        "UV_INDEX_URL": "https://mirror.example/simple",
        "UV_EXTRA_INDEX_URL": "https://ci:tok-from-file@pypi.example/simple",
    }
    assert PackageIndexes.from_environment({}).urls == {}


def test_masking_hides_urls_and_passwords_but_not_user_names() -> None:
    indexes = PackageIndexes.from_environment({"MREG_EXTRA_INDEX_URL": "https://ci:tok-123456@pypi.example/simple"})
    text = "GET https://ci:tok-123456@pypi.example/simple/x/ as ci with tok-123456 for ci-package"
    assert indexes.mask(text) == "GET ****/x/ as ci with **** for ci-package"
    token_only = PackageIndexes.from_environment({"MREG_INDEX_URL": "https://ghp_abcdef@pypi.example/simple"})
    assert token_only.mask("token ghp_abcdef") == "token ****"


def test_bad_values_are_refused_without_showing_them(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as caught:
        PackageIndexes.from_environment({"MREG_INDEX_URL": "ftp://user:hunter22@host"})
    assert "hunter22" not in str(caught.value)
    with pytest.raises(InvalidInputError, match=r"MREG_INDEX_URL_FILE=.*cannot be read"):
        PackageIndexes.from_environment({"MREG_INDEX_URL_FILE": str(tmp_path / "missing")})
