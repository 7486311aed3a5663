"""mreg: train and serve images pinned to the same libraries, and a registry of models built with them.

The names below are imported on first use, so that `mreg --help` does not pay for pydantic or boto3.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mreg.errors import MregError
    from mreg.records import Alias, ModelRef, Record
    from mreg.registry import Registry
    from mreg.spec import Spec, load_spec

__all__ = ["Alias", "ModelRef", "MregError", "Record", "Registry", "Spec", "load_spec"]

_HOMES = {
    "Alias": "mreg.records",
    "ModelRef": "mreg.records",
    "MregError": "mreg.errors",
    "Record": "mreg.records",
    "Registry": "mreg.registry",
    "Spec": "mreg.spec",
    "load_spec": "mreg.spec",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'mreg' has no attribute {name!r}")
