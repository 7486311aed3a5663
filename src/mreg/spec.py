"""The `registry.toml` spec: pydantic models (frozen, unknown keys refused) and `load_spec`."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
import unicodedata
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from mreg._grammar import NAME_RULE, is_name, parse_bucket_uri, parse_reference, parse_repository, store_scheme
from mreg.errors import SpecError

Stage = Literal["train", "serve"]
STAGES: tuple[Stage, ...] = ("train", "serve")
GROUPS = ("shared", "train", "serve")
DOCKERFILE_STAGES = ("uv", "base", "train", "serve")
DEFAULT_STORAGE_URI = "file://.mreg/objects"
DEFAULT_REGISTRY_URI = "file://.mreg/registry"

PYTHON_VERSION_RE = re.compile(r"3\.[0-9]{1,2}")
PLATFORM_RE = re.compile(r"(?P<arch>x86_64|aarch64)-manylinux_2_[0-9]{1,2}")
DOCKER_PLATFORMS = {"x86_64": "linux/amd64", "aarch64": "linux/arm64"}
DEBIAN_PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
LABEL_KEY_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
PATH_PART_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
RESERVED_LABEL_PREFIXES = ("io.mreg.", "org.opencontainers.image.")
MAX_TEXT = 1024
DEFAULT_PORT = 8080
DEFAULT_TRAIN_OUTPUT = "/out"
HTTP_PATH_RE = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@%/?]{0,1023}")
"""An HTTP path (and query) as a health check requests it: RFC 3986 characters only, at most 1024."""
RESERVED_MOUNTS = ("/", "/app", "/opt", "/opt/venv", "/proc", "/sys", "/dev", "/etc", "/usr", "/bin", "/lib")
"""Container paths a training output may not be mounted on (the image's own code, Python or system)."""


def _fail(reason: str) -> PydanticCustomError:
    return PydanticCustomError("mreg", "{reason}", {"reason": reason})


def _model_name(value: str) -> str:
    if not is_name(value):
        raise _fail(f"is not a valid model name ({NAME_RULE})")
    return value


def _python_version(value: str) -> str:
    if not PYTHON_VERSION_RE.fullmatch(value):
        raise _fail('is not a Python version of the form "3.X"')
    return value


def _platform(value: str) -> str:
    if not PLATFORM_RE.fullmatch(value):
        raise _fail('is not a supported platform ("x86_64-manylinux_2_N" or "aarch64-manylinux_2_N")')
    return value


def _image_reference(value: str) -> str:
    if value.lower() in DOCKERFILE_STAGES:
        raise _fail(
            f"names a stage of mreg's Dockerfile ({', '.join(DOCKERFILE_STAGES)}); write the image in full, "
            f"e.g. docker.io/library/{value.lower()}:latest"
        )
    try:
        return str(parse_reference(value))
    except ValueError as exc:
        raise _fail(str(exc)) from exc


def _repository(value: str) -> str:
    try:
        return parse_repository(value)
    except ValueError as exc:
        raise _fail(str(exc)) from exc


def _requirement(value: str) -> str:
    if "\\" in value:
        raise _fail("holds a backslash; escapes are not part of PEP 508 and are refused")
    try:
        requirement = Requirement(value)
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0]
        raise _fail(f"is not a valid PEP 508 requirement ({reason})") from exc
    if requirement.url:
        raise _fail("is a direct URL requirement; mreg installs from package indexes only")
    normalised = str(requirement)
    if _has_control(normalised):
        raise _fail("contains a control or line-separator character")
    return normalised


def _debian_package(value: str) -> str:
    if not DEBIAN_PACKAGE_RE.fullmatch(value):
        raise _fail(
            "is not a valid Debian package name (2 or more characters: lower-case letters, digits, "
            "'+', '-', '.', starting with a letter or digit)"
        )
    return value


def _label_key(value: str) -> str:
    if len(value) > 128 or not LABEL_KEY_RE.fullmatch(value):
        raise _fail("is not a valid label key (at most 128 lower-case letters and digits separated by '.', '-' or '_')")
    if value.startswith(RESERVED_LABEL_PREFIXES):
        raise _fail("is reserved: mreg sets the io.mreg.* and org.opencontainers.image.* labels itself")
    return value


def _relative_path(value: str) -> str:
    parts = value.split("/")
    if value.startswith("/") or not all(PATH_PART_RE.fullmatch(part) for part in parts):
        raise _fail(
            "is not a relative path of plain names (letters, digits, '.', '_', '-' separated by '/'; "
            "no '..', no leading '/' or '-')"
        )
    if any(part in {".", ".."} for part in parts):
        raise _fail("is not allowed: '.' and '..' path components are refused")
    return value


def _health_path(value: str) -> str:
    if not HTTP_PATH_RE.fullmatch(value):
        raise _fail(
            "is not an HTTP path: it starts with '/', holds at most 1024 URL characters (letters, digits and "
            "-._~!$&'()*+,;=:@%/?) and no spaces"
        )
    return value


def _container_path(value: str) -> str:
    parts = value.split("/")[1:]
    if len(value) > 255 or not value.startswith("/") or not all(PATH_PART_RE.fullmatch(part) for part in parts):
        raise _fail(
            "is not an absolute container path of plain names (a leading '/', then letters, digits, '.', '_', "
            "'-' separated by '/'; at most 255 characters)"
        )
    if any(part in {".", ".."} for part in parts):
        raise _fail("is not allowed: '.' and '..' path components are refused")
    if value in RESERVED_MOUNTS or value.startswith(("/proc/", "/sys/", "/dev/")):
        raise _fail(
            f"is reserved: a mount there would hide the image's code, Python or system ({', '.join(RESERVED_MOUNTS)}, "
            "and anything below /proc, /sys or /dev)"
        )
    return value


def _store_uri(value: str) -> str:
    try:
        if store_scheme(value) != "file":
            parse_bucket_uri(value)
        elif value == "file://":
            raise ValueError("is not a supported store URI (use file://PATH, s3://BUCKET/PREFIX or gs://BUCKET/PREFIX)")
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    return value


def _endpoint_url(value: str) -> str:
    parsed = urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise _fail("is not an http(s)://HOST[:PORT] endpoint URL")
    if parsed.username or parsed.password:
        raise _fail("holds credentials; mreg takes them from boto3's configuration chain, never from the spec")
    if parsed.query or parsed.fragment:
        raise _fail("must not have a query or fragment")
    return value


ModelName = Annotated[str, AfterValidator(_model_name)]
PythonVersion = Annotated[str, AfterValidator(_python_version)]
Platform = Annotated[str, AfterValidator(_platform)]
ImageRef = Annotated[str, AfterValidator(_image_reference)]
Repository = Annotated[str, AfterValidator(_repository)]
RequirementText = Annotated[str, AfterValidator(_requirement)]
DebianPackage = Annotated[str, AfterValidator(_debian_package)]
LabelKey = Annotated[str, AfterValidator(_label_key)]
LabelValue = Annotated[str, Field(max_length=MAX_TEXT)]
RelativePath = Annotated[str, AfterValidator(_relative_path)]
StoreUri = Annotated[str, AfterValidator(_store_uri)]
EndpointUrl = Annotated[str, AfterValidator(_endpoint_url)]
Argument = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
HealthPath = Annotated[str, AfterValidator(_health_path)]
ContainerPath = Annotated[str, AfterValidator(_container_path)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Table(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class ModelTable(_Table):
    name: ModelName


class PythonTable(_Table):
    version: PythonVersion = "3.11"
    base_image: ImageRef | None = None
    platform: Platform = "x86_64-manylinux_2_36"
    """The wheel platform packages are locked for (Debian 12 has glibc 2.36); it sets the image platform."""

    @property
    def image(self) -> str:
        """The base image: the configured one, or the slim Debian image of the Python version."""
        return self.base_image or f"python:{self.version}-slim-bookworm"

    @property
    def docker_platform(self) -> str:
        """The image platform matching the lock's wheel platform, e.g. `linux/amd64`."""
        match = PLATFORM_RE.fullmatch(self.platform)
        assert match is not None  # noqa: S101 - validated above
        return DOCKER_PLATFORMS[match["arch"]]


class PackageGroups(_Table):
    shared: list[RequirementText] = []
    train: list[RequirementText] = []
    serve: list[RequirementText] = []


class SystemPackageGroups(_Table):
    shared: list[DebianPackage] = []
    train: list[DebianPackage] = []
    serve: list[DebianPackage] = []


class ImagesTable(_Table):
    repository: Repository | None = None
    labels: dict[LabelKey, LabelValue] = {}


class StageTable(_Table):
    copy_: list[RelativePath] = Field(default=[], alias="copy")
    command: list[Argument] | None = Field(default=None, min_length=1)


class TrainStageTable(StageTable):
    output: ContainerPath = DEFAULT_TRAIN_OUTPUT
    """Where the train container writes its model: `mreg train` mounts the output directory there."""


class ServeStageTable(StageTable):
    port: Port = DEFAULT_PORT
    """The default of the serve container's PORT, the port its server listens on."""
    health: HealthPath | None = None
    """An HTTP path that answers 2xx once the server is ready; without it, readiness is an open port."""


class StagesTable(_Table):
    train: TrainStageTable = TrainStageTable()
    serve: ServeStageTable = ServeStageTable()


class StorageTable(_Table):
    uri: StoreUri = DEFAULT_STORAGE_URI
    endpoint_url: EndpointUrl | None = None
    """An S3-compatible server (MinIO, ...); default: boto3's (AWS_ENDPOINT_URL, or AWS)."""


class RegistryTable(_Table):
    uri: StoreUri = DEFAULT_REGISTRY_URI
    endpoint_url: EndpointUrl | None = None
    trusted_keys: RelativePath | None = None
    require_signature: bool = False


class RenderTable(_Table):
    template_dir: RelativePath | None = None


class Spec(_Table):
    """A validated `registry.toml`."""

    model: ModelTable
    python: PythonTable = PythonTable()
    packages: PackageGroups = PackageGroups()
    system_packages: SystemPackageGroups = SystemPackageGroups()
    images: ImagesTable = ImagesTable()
    stages: StagesTable = StagesTable()
    storage: StorageTable = StorageTable()
    registry: RegistryTable = RegistryTable()
    render: RenderTable = RenderTable()

    _source: Path = PrivateAttr(default=Path("registry.toml"))

    @model_validator(mode="before")
    @classmethod
    def _printable(cls, data: Any) -> Any:
        """No value anywhere may hold a control or line-separator character (one could break a line)."""
        problems = [_describe(key, value, reason) for key, value, reason in _unprintable(data)]
        if problems:
            raise _fail("\n".join(problems))
        return data

    @model_validator(mode="after")
    def _no_duplicates(self) -> Spec:
        for table, groups in (("packages", self.packages), ("system_packages", self.system_packages)):
            seen: dict[str, str] = {}
            for group in GROUPS:
                for index, item in enumerate(getattr(groups, group)):
                    name = canonicalize_name(Requirement(item).name) if table == "packages" else item
                    key = f"{table}.{group}[{index}]"
                    if name in seen:
                        raise _fail(_describe(key, item, f"declares {name} again (already in {seen[name]})"))
                    seen[name] = key
        for stage in STAGES:
            names: dict[str, str] = {}
            for index, path in enumerate(self.stages_for(stage).copy_):
                key = f"stages.{stage}.copy[{index}]"
                base = PurePosixPath(path).name
                if base in names:
                    raise _fail(_describe(key, path, f"would overwrite /app/{base}, already copied by {names[base]}"))
                names[base] = key
        return self

    @property
    def source(self) -> Path:
        """The spec file this was loaded from."""
        return self._source

    @property
    def root(self) -> Path:
        """The directory relative paths and `file://` URIs of the spec resolve against."""
        return self._source.parent

    @property
    def state_dir(self) -> Path:
        """Where mreg keeps the last build's result (`.mreg/` beside the spec)."""
        return self.root / ".mreg"

    def stages_for(self, stage: str) -> StageTable:
        """The `[stages.<stage>]` table."""
        table: StageTable = getattr(self.stages, stage)
        return table

    def resolve_path(self, relative: str) -> Path:
        """A spec-relative path made absolute."""
        return (self.root / relative).resolve()

    def digest(self) -> str:
        """SHA-256 of the spec's canonical JSON form: comments, key and package order, and keys left at their
        defaults (spelled out or not, or added by a later mreg) do not change it."""
        data = self.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        for table in ("packages", "system_packages"):
            data[table] = {group: sorted(items) for group, items in data.get(table, {}).items()}
        for stage in data.get("stages", {}).values():
            stage.get("copy", []).sort()
        canonical = json.dumps(data, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


def load_spec(path: Path | str) -> Spec:
    """Read and validate a spec file; every problem becomes a SpecError naming file, key and value."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SpecError(f"{path}: file not found (pass --spec PATH or run mreg beside registry.toml).") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot be read ({exc}).") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: invalid TOML: {exc}.") from exc
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError("\n".join(f"{path}: {line}" for line in _explain(exc, data))) from exc
    spec._source = path.absolute()
    problems = [f"{path}: {line}" for line in _missing_files(spec)]
    if problems:
        raise SpecError("\n".join(problems))
    return spec


def format_key(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as the TOML key a user would write: `packages.shared[0]`."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            bare = re.fullmatch(r"[A-Za-z0-9_-]+", part)
            name = part if bare else json.dumps(part)
            text += f".{name}" if text else name
    return text


def _describe(key: str, value: object, reason: str) -> str:
    if value is _MISSING:
        return f"{key}: {reason}."
    return f"{key} = {_toml_value(value)}: {reason}."


_MISSING = object()


def _toml_value(value: object) -> str:
    if isinstance(value, dict):
        return "{...}"
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 120 else text[:117] + "..."


def _explain(exc: ValidationError, data: dict[str, Any]) -> Iterator[str]:
    for error in exc.errors(include_url=False):
        loc = tuple(part for part in error["loc"] if part != "[key]")
        # pydantic reports the failing branch of `X | None` with a type suffix: drop it
        loc = tuple(part for part in loc if not (isinstance(part, str) and part.endswith("]")))
        key = format_key(loc)
        kind = error["type"]
        value = error.get("input", _MISSING)
        if kind == "missing":
            yield _describe(key, _MISSING, "is required but missing")
        elif kind == "extra_forbidden":
            yield _describe(key, value, f"is not a known key (allowed: {_allowed_keys(loc[:-1])})")
        elif kind == "mreg" and not loc:
            yield from error["msg"].splitlines()  # whole-spec checks name their keys themselves
        elif kind in ("model_type", "dict_type"):
            yield _describe(key, value, "should be a table")
        elif kind == "mreg":
            if "[key]" in error["loc"]:
                yield _describe(key, _MISSING, f"the key {json.dumps(loc[-1])} {error['msg']}")
            else:
                yield _describe(key, value, error["msg"])
        else:
            message = error["msg"]
            yield _describe(key, value, message[0].lower() + message[1:])


def _allowed_keys(loc: tuple[int | str, ...]) -> str:
    model: Any = Spec
    for part in loc:
        field = model.model_fields.get(part) or next((f for f in model.model_fields.values() if f.alias == part), None)
        model = field.annotation if field else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return "none"
    return ", ".join(field.alias or name for name, field in model.model_fields.items())


def _unprintable(data: object, loc: tuple[int | str, ...] = ()) -> Iterator[tuple[str, object, str]]:
    """Control and line-separator characters are refused anywhere: no value may break a line."""
    if isinstance(data, dict):
        for key, value in data.items():
            if _has_control(key):
                yield format_key(loc), _MISSING, f"the key {json.dumps(key)} contains a control character"
            yield from _unprintable(value, (*loc, key))
    elif isinstance(data, list):
        for index, item in enumerate(data):
            yield from _unprintable(item, (*loc, index))
    elif isinstance(data, str) and _has_control(data):
        yield format_key(loc), data, "contains a control or line-separator character"


def _has_control(text: str) -> bool:
    return any(unicodedata.category(char) in {"Cc", "Cf", "Zl", "Zp"} for char in text)


def _missing_files(spec: Spec) -> Iterator[str]:
    root = spec.root.resolve()
    named = [(f"stages.{stage}.copy[{i}]", p) for stage in STAGES for i, p in enumerate(spec.stages_for(stage).copy_)]
    if spec.render.template_dir:
        named.append(("render.template_dir", spec.render.template_dir))
    if spec.registry.trusted_keys:
        named.append(("registry.trusted_keys", spec.registry.trusted_keys))
    for key, relative in named:
        target = spec.resolve_path(relative)
        if not target.is_relative_to(root):
            yield _describe(key, relative, f"resolves outside {root} (through a symbolic link)")
        elif not target.exists():
            yield _describe(key, relative, f"does not exist (looked for {target})")
