"""A JSON Schema (draft 2020-12) of `registry.toml`, generated from the spec models.

Titles and descriptions come from the models' docstrings (a class's, and the docstring under a field);
each grammar a spec validator enforces becomes a `pattern` (and length bounds) where a regular expression
without look-around can say it. What only Python can check (PEP 508 requirements, image references,
duplicates across groups, files that must exist) is left to `mreg`: the schema accepts a superset of the
specs mreg accepts, and refuses unknown keys, wrong types and missing tables as mreg does.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import json
import textwrap
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from mreg import spec
from mreg._grammar import MAX_NAME, NAME_RE

SCHEMA_FILE = "registry.schema.json"

_PATH = r"[A-Za-z0-9_][A-Za-z0-9._-]*"
_PREFIX = r"[A-Za-z0-9._-]+"
_CONSTRAINTS: dict[Callable[..., Any], dict[str, Any]] = {
    spec._model_name: {"pattern": rf"^{NAME_RE.pattern}$", "maxLength": MAX_NAME},
    spec._python_version: {"pattern": rf"^{spec.PYTHON_VERSION_RE.pattern}$"},
    spec._platform: {"pattern": "^(x86_64|aarch64)-manylinux_2_[0-9]{1,2}$"},
    spec._debian_package: {"pattern": rf"^{spec.DEBIAN_PACKAGE_RE.pattern}$"},
    spec._label_key: {
        "pattern": rf"^{spec.LABEL_KEY_RE.pattern}$",
        "maxLength": 128,
        "not": {"pattern": r"^(io\.mreg\.|org\.opencontainers\.image\.)"},
    },
    spec._relative_path: {"pattern": rf"^{_PATH}(/{_PATH})*$"},
    spec._health_path: {"pattern": rf"^{spec.HTTP_PATH_RE.pattern}$"},
    spec._container_path: {
        "pattern": rf"^(/{_PATH})+$",
        "maxLength": 255,
        "not": {"anyOf": [{"enum": list(spec.RESERVED_MOUNTS)}, {"pattern": "^/(proc|sys|dev)/"}]},
    },
    spec._store_uri: {
        "pattern": rf"^(file://.+|s3://[a-z0-9][a-z0-9.-]{{1,61}}[a-z0-9](/{_PREFIX})*/?|gs://[a-z0-9][a-z0-9._-]{{1,220}}[a-z0-9](/{_PREFIX})*/?)$"
    },
    spec._endpoint_url: {"pattern": r"^https?://[^/?#@\s]+(/[^?#\s]*)?$"},
}
"""What each validator of `mreg.spec` enforces, as far as JSON Schema can say it."""


class _SpecSchema(GenerateJsonSchema):
    """pydantic's generator, with the validators' grammars, field docstrings, and no `null` (TOML has none:
    an optional key is left out)."""

    def function_after_schema(self, schema: core_schema.AfterValidatorFunctionSchema) -> JsonSchemaValue:
        generated = self.generate_inner(schema["schema"])
        return {**generated, **_CONSTRAINTS.get(schema["function"]["function"], {})}

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        generated = super().dict_schema(schema)
        patterns: dict[str, Any] = generated.pop("patternProperties", {})
        if len(patterns) == 1:  # pydantic moves a key pattern there, where other keys would still pass
            [(pattern, values)] = patterns.items()
            generated["propertyNames"] = {**generated.get("propertyNames", {}), "pattern": pattern}
            generated["additionalProperties"] = values
        elif patterns:
            generated["patternProperties"] = patterns
        return generated

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        generated = super().model_schema(schema)
        documented = _field_docstrings(schema["cls"])
        properties: dict[str, Any] = generated.get("properties", {})
        for name, field in schema["cls"].model_fields.items():
            key = field.alias or name
            if name in documented and key in properties:
                properties[key].setdefault("description", documented[name])
            if key in properties and properties[key].get("default", "") is None:
                del properties[key]["default"]
        return generated


def registry_schema() -> dict[str, Any]:
    """The JSON Schema of `registry.toml`."""
    generated = spec.Spec.model_json_schema(by_alias=True, schema_generator=_SpecSchema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "registry.toml",
        "description": "mreg's spec: one model, its train and serve images, and where its registry lives.",
        **{key: value for key, value in generated.items() if key != "title"},
    }


def schema_text() -> str:
    """The schema as the committed file holds it (sorted keys, two-space indent, a final newline)."""
    return json.dumps(registry_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _field_docstrings(model: type[BaseModel]) -> dict[str, str]:
    """The string literal right under each annotated field of `model` and its bases (as Sphinx reads it)."""
    found: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for statement, following in itertools.pairwise(body):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                found[statement.target.id] = inspect.cleandoc(following.value.value)
    return found
