"""The botocore loader that checks one service directory instead of listing them all."""

from __future__ import annotations

import os
from pathlib import Path

import botocore.session
import pytest
from botocore.exceptions import UnknownServiceError
from botocore.loaders import create_loader

from mreg._s3_loader import service_loader


def test_it_loads_what_botocores_own_loader_loads() -> None:
    ours, theirs = service_loader(None), create_loader(None)
    assert ours.search_paths == theirs.search_paths
    for type_name in ("service-2", "endpoint-rule-set-1"):
        assert ours.load_service_model("s3", type_name) == theirs.load_service_model("s3", type_name)
    everything = theirs.list_available_services("service-2")
    known = ours.list_available_services("service-2")
    assert list(known) == everything
    assert len(known) == len(everything)
    assert known[0] == everything[0]
    assert list(known[:3]) == everything[:3]
    for name in ("s3", "sts", "sso", "sso-oidc", "kms"):
        assert (name in known) == (name in everything)


@pytest.mark.parametrize("name", ["nope", "s3/../sts", "", "S3"])
def test_an_unknown_service_is_refused_as_botocore_refuses_it(name: str) -> None:
    assert name not in service_loader(None).list_available_services("service-2")
    session = botocore.session.Session()
    session.register_component("data_loader", service_loader(None))
    with pytest.raises(UnknownServiceError):
        session.create_client(name, region_name="us-east-1")


def test_the_data_path_setting_is_honoured(tmp_path: Path) -> None:
    model = tmp_path / "mreg-test-service" / "2026-11-29" / "service-2.json"
    model.parent.mkdir(parents=True)
    model.write_text('{"metadata": {"apiVersion": "2026-11-29"}, "operations": {}, "shapes": {}}')
    loader = service_loader(os.pathsep.join([str(tmp_path), "/nonexistent"]))
    assert loader.search_paths[0] == str(tmp_path)
    assert "mreg-test-service" in loader.list_available_services("service-2")
    assert loader.load_service_model("mreg-test-service", "service-2")["metadata"]["apiVersion"] == "2026-11-29"
