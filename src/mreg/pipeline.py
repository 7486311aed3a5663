"""`build` and `register` as library functions: they wire spec, lock, render, engine and guards, and write
through the registry."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from mreg._fileio import incoming
from mreg._inventory import inventory_stage
from mreg.engine import Built, BuiltImage, Engine
from mreg.errors import InvalidInputError, MregError, SkewError, StorageError
from mreg.guards.skew import ImageEnvironment, check_environments, inspect_image, read_inventory
from mreg.indexes import PackageIndexes
from mreg.lock import LockMode, ensure_lock, load_lock
from mreg.render import BuildContext, render
from mreg.spec import STAGES, Spec, Stage

if TYPE_CHECKING:
    from mreg.provenance._keys import SigningKey
    from mreg.records import GitInfo, Record
    from mreg.records._metadata import Metadata
    from mreg.storage import Progress

Group = Literal["shared", "train", "serve"]
LineSink = Callable[[str], None]
BUILD_RESULT = "build.json"


class BuildResult(BaseModel):
    """What `mreg build` produced, saved under `.mreg/` for `mreg register`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec_sha256: str
    context_sha256: str
    buildkit: bool
    index_secrets: tuple[str, ...] = ()  # the private-index secrets the Dockerfile mounted
    images: dict[Stage, BuiltImage]
    environments: dict[Stage, ImageEnvironment]
    base_image_digest: str | None = None  # the base image's manifest digest or local ID, when known
    buildkit_refs: dict[Stage, str] = {}  # BuildKit's reference of the build that made each image, when known

    def summary(self) -> dict[str, dict[str, str]]:
        """The `build --json` document: each stage's ref, digest and pinned image."""
        return {stage: image.model_dump() for stage, image in self.images.items()}


def build(
    spec: Spec,
    engine: Engine,
    *,
    targets: Iterable[Stage] = STAGES,
    push: bool = False,
    network: str | None = "auto",
    rebuild: bool = False,
    lock_mode: LockMode = "auto",
    relocking: Callable[[str], AbstractContextManager[object]] = lambda reason: nullcontext(),
    on_line: LineSink = lambda line: None,
) -> BuildResult:
    """Build the spec's images from its lock, check them for skew, then push them when asked.

    Images whose content tag already exists (locally, or in the registry when pushing) are reused. Images
    that fail the skew guard are untagged, so that the next build does not reuse them. `network` is the
    build's network; `auto` asks the engine (only when something is to be built). `lock_mode` and
    `relocking` are `ensure_lock`'s: by default a missing or stale lock is written first.
    """
    if push and not spec.images.repository:
        raise InvalidInputError(f'{spec.source}: --push needs images.repository (e.g. "registry:5000/team/model").')
    indexes = PackageIndexes.from_environment()
    lock = ensure_lock(spec, mode=lock_mode, indexes=indexes, relocking=relocking)
    context = render(spec, lock, buildkit=engine.buildkit, index_secrets=indexes.urls.keys())
    saved = _saved_result(spec)
    repository = spec.images.repository or f"mreg/{spec.model.name}"
    refs: dict[Stage, str] = {stage: f"{repository}:{context.tag(stage)}" for stage in targets}
    images = {} if rebuild else _existing_images(engine, refs, in_registry=push, on_line=on_line)
    missing: dict[str, str] = {stage: ref for stage, ref in refs.items() if stage not in images}
    built = Built({})
    listed: dict[Stage, ImageEnvironment] = {}
    if missing:
        network = engine.default_network() if network == "auto" else network
        built, listed = _build_images(engine, context, missing, network=network, indexes=indexes, on_line=on_line)
    fresh = built.images
    images.update({stage: fresh[stage] for stage in refs if stage in fresh})
    environments = _environments(engine, images, saved, fresh=set(fresh), listed=listed, on_line=on_line)
    buildkit_refs: dict[Stage, str] = {
        stage: built.buildkit_refs[stage] for stage in refs if stage in built.buildkit_refs
    }
    if saved and saved.context_sha256 == context.digest():  # one target at a time builds on the other
        environments = {**saved.environments, **environments}
        images = {**saved.images, **images}
        kept = {stage: ref for stage, ref in saved.buildkit_refs.items() if stage not in fresh}
        buildkit_refs = {**kept, **buildkit_refs}
    try:
        check_environments(environments, lock)
    except SkewError:
        for image in fresh.values():  # so that no later build reuses them
            engine.remove(image.ref)
        raise
    if push:
        for stage in refs:
            if not images[stage].in_registry:
                images[stage] = engine.push(images[stage].ref, on_line=on_line)
    same = saved is not None and saved.context_sha256 == context.digest() and not fresh
    result = BuildResult(
        spec_sha256=spec.digest(),
        context_sha256=context.digest(),
        buildkit=engine.buildkit,
        index_secrets=tuple(sorted(indexes.urls)),
        images=images,
        environments=environments,
        # for the provenance statement: the base image the engine holds (asked again only after a build)
        base_image_digest=(saved and same and saved.base_image_digest) or engine.local_image_id(spec.python.image),
        buildkit_refs=buildkit_refs,
    )
    return _save_build_result(spec, result)


def _build_images(
    engine: Engine,
    context: BuildContext,
    refs: dict[str, str],
    *,
    network: str | None,
    indexes: PackageIndexes,
    on_line: LineSink,
) -> tuple[Built, dict[Stage, ImageEnvironment]]:
    """Build `refs` (stage -> reference) and, with BuildKit, each image's inventory in the same solve,
    where the Dockerfile has its inventory stage: it runs while the image is exported, and spares the
    skew guard a container."""
    stages = context.stages() if engine.buildkit else []
    inventories = [stage for stage in STAGES if stage in refs and inventory_stage(stage) in stages]
    with tempfile.TemporaryDirectory(prefix="mreg-build-") as scratch:
        directory = Path(scratch, "context")
        context.write(directory)
        exports = {inventory_stage(stage): Path(scratch, inventory_stage(stage)) for stage in inventories}
        built = engine.build(
            directory,
            refs,
            network=network,
            on_line=on_line,
            secrets=indexes.urls,
            redact=indexes.mask,
            exports=exports,
        )
        listed = {
            stage: read_inventory(exports[inventory_stage(stage)], built.images[stage].ref) for stage in inventories
        }
    for stage in listed:
        on_line(f"[{stage}] the build listed the distributions installed in {built.images[stage].ref}")
    return built, listed


def _existing_images(
    engine: Engine, refs: dict[Stage, str], *, in_registry: bool, on_line: LineSink
) -> dict[Stage, BuiltImage]:
    """The images already tagged with their content tag: in the registry when pushing, else (or then) in
    the engine. An unchanged spec and lock find both and build nothing."""

    def lookup(ref: str) -> BuiltImage | None:
        digest = engine.registry_digest(ref) if in_registry else None
        if digest is not None:
            return BuiltImage.pushed(ref, digest)
        image_id = engine.local_image_id(ref)
        return BuiltImage.local(ref, image_id) if image_id else None

    with ThreadPoolExecutor(max_workers=len(refs) or 1) as pool:
        looked_up = dict(zip(refs, pool.map(lookup, refs.values()), strict=True))
    found = {stage: image for stage, image in looked_up.items() if image is not None}
    for stage, image in found.items():
        on_line(f"[{stage}] {image.ref} is up to date ({image.digest})")
    return found


def _environments(
    engine: Engine,
    images: dict[Stage, BuiltImage],
    saved: BuildResult | None,
    *,
    fresh: set[str],
    listed: dict[Stage, ImageEnvironment],
    on_line: LineSink,
) -> dict[Stage, ImageEnvironment]:
    """What each image holds: listed by its build, remembered from an earlier build of the same tag, or
    else asked from the image (both at once)."""
    environments = dict(listed)
    if saved is not None:  # the same tag is the same content: what it held, it holds
        environments.update(
            (stage, saved.environments[stage])
            for stage, image in images.items()
            if stage not in fresh and stage in saved.environments and saved.images[stage].ref == image.ref
        )
    unknown = [stage for stage in images if stage not in environments]
    for stage in unknown:
        on_line(f"[{stage}] listing the distributions installed in {images[stage].ref}")
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = pool.map(lambda stage: inspect_image(engine, images[stage].image), unknown)
        environments.update(zip(unknown, found, strict=True))
    return environments


def register(
    spec: Spec,
    model_path: Path,
    *,
    engine: Callable[[], Engine],
    build_result: Path | None = None,
    on_progress: Progress | None = None,
    metadata: Metadata | None = None,
    signing_key: SigningKey | None = None,
    model_bundle: bytes | None = None,
) -> Record:
    """Upload the model (a file, or a directory: one object per file plus a manifest), then write the next
    immutable version of the model's record, and beside it each image's SBOM and the in-toto statement of
    the registration (signed with `signing_key` when given), and the model's OpenSSF `model_bundle` if any.

    A directory is refused before anything is uploaded when it holds links, special files, unreadable
    entries, names that differ only by case or are not NFC, or no file. An ONNX model (a file, or a
    directory's ONNX file with its external data) is first opened by the serve image's onnxruntime (`engine`
    is only opened for that). `metadata` (metrics, params, datasets, run URL) goes into the record.
    """
    from mreg._provenance import image_sboms, register_predicate
    from mreg.guards.onnx import check_serve_runtime, find_onnx
    from mreg.records import Record
    from mreg.records._metadata import Metadata
    from mreg.records.model import ServingContract
    from mreg.registry import Registry, actor
    from mreg.storage._tree import walk_tree

    started_on = datetime.now(UTC)
    built = load_build_result(spec, build_result)
    if model_path.is_symlink() or not (model_path.is_file() or model_path.is_dir()):
        raise InvalidInputError(f"{model_path}: no such model file or directory (a link is not followed).")
    tree = walk_tree(model_path) if model_path.is_dir() else None
    onnx = find_onnx(model_path)
    if onnx is not None:
        onnx = check_serve_runtime(engine(), built.images["serve"].image, model_path, onnx)
    registry = Registry.from_spec(spec)
    with ThreadPoolExecutor(max_workers=1) as pool:
        sboms = pool.submit(image_sboms, spec, built, load_lock(spec))  # meanwhile: it takes a while
        model = registry.store_model(model_path, tree=tree, on_progress=on_progress)
        documents = sboms.result()
    git = git_info(spec.root)
    created_at = datetime.now(UTC).replace(microsecond=0)

    def make(version: int) -> Record:
        return Record(
            name=spec.model.name,
            version=version,
            model=model,
            images=dict(built.images),
            packages=recorded_packages(built.environments["train"], built.environments["serve"]),
            python=built.environments["serve"].python,
            spec_sha256=spec.digest(),
            created_at=created_at,
            git=git,
            onnx=onnx,
            base_image=spec.python.image,
            serving=ServingContract(port=spec.stages.serve.port, health=spec.stages.serve.health),
            **(metadata or Metadata()).record_fields(),
        )

    record = registry.create(spec.model.name, make)
    predicate = register_predicate(
        spec, built, record, actor=actor(), started_on=started_on, finished_on=datetime.now(UTC)
    )
    try:
        registry.attest(record, predicate=predicate, sboms=documents, key=signing_key, model_bundle=model_bundle)
    except MregError as exc:
        ref, why = f"{record.name}:{record.version}", str(exc).rstrip(".")
        raise StorageError(
            f"{ref} was registered, but its provenance could not be written ({why}), so it has no statement or "
            f"signature to check; yank it (`mreg yank {ref} --reason 'no provenance'`) and register again."
        ) from exc
    return record


def load_build_result(spec: Spec, path: Path | None = None) -> BuildResult:
    """The saved build result, refused when it is missing, partial or from another spec."""
    path = path or spec.state_dir / BUILD_RESULT
    try:
        result = BuildResult.model_validate_json(path.read_bytes())
    except FileNotFoundError as exc:
        raise InvalidInputError(f"{path}: no build result; run `mreg build` first.") from exc
    except (OSError, ValidationError) as exc:
        raise InvalidInputError(f"{path}: not a build result written by mreg build ({exc}).") from exc
    # what the images are built from: a change to the stores' configuration does not call for a rebuild
    context = render(spec, load_lock(spec), buildkit=result.buildkit, index_secrets=result.index_secrets)
    if result.context_sha256 != context.digest():
        raise InvalidInputError(
            f"{path}: the images were built from another version of {spec.source}, its lock or the files it "
            "copies; run `mreg build` again."
        )
    absent = [stage for stage in STAGES if stage not in result.images or stage not in result.environments]
    if absent:
        raise InvalidInputError(f"{path}: no {' or '.join(absent)} image was built; run `mreg build --target all`.")
    return result


def recorded_packages(train: ImageEnvironment, serve: ImageEnvironment) -> dict[Group, list[str]]:
    """The exact installed sets as `name==version`: in both images (`shared`), and in one image only."""
    common = set(train.packages) & set(serve.packages)

    def pins(packages: dict[str, str], names: Iterable[str]) -> list[str]:
        return [f"{name}=={packages[name]}" for name in sorted(names)]

    return {
        "shared": pins(train.packages, common),
        "train": pins(train.packages, set(train.packages) - common),
        "serve": pins(serve.packages, set(serve.packages) - common),
    }


def git_info(directory: Path) -> GitInfo | None:
    """The commit checked out in `directory` and whether tracked files differ from it (None outside git)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    from mreg.records import GitInfo  # here, not at the top: `mreg build` never needs the record models

    return GitInfo(commit=commit, dirty=bool(status.strip()))


def _saved_result(spec: Spec) -> BuildResult | None:
    """The result of the previous build, if any."""
    try:
        return BuildResult.model_validate_json((spec.state_dir / BUILD_RESULT).read_bytes())
    except (OSError, ValidationError):
        return None


def _save_build_result(spec: Spec, result: BuildResult) -> BuildResult:
    """Save the result atomically under `.mreg/`."""
    state = spec.state_dir
    state.mkdir(parents=True, exist_ok=True)
    (state / ".gitignore").write_text("# mreg's local state: build results, and the default stores\n*\n")
    with incoming(state) as (handle, temporary):
        handle.write(result.model_dump_json(indent=2).encode())
        handle.close()
        temporary.replace(state / BUILD_RESULT)
    return result
