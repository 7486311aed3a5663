"""`build` and `register` as library functions: they wire spec, render, engine, storage and records."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from mreg.engine import BuiltImage, Engine
from mreg.errors import InvalidInputError
from mreg.records import GitInfo, ImageRecord, ModelFile, Record, open_record_store
from mreg.render import render
from mreg.spec import STAGES, Spec
from mreg.storage import Progress, open_object_store

Stage = Literal["train", "serve"]
LineSink = Callable[[str], None]
BUILD_RESULT = "build.json"


class BuildResult(BaseModel):
    """What `mreg build` produced, saved under `.mreg/` for `mreg register`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec_sha256: str
    context_sha256: str
    buildkit: bool
    images: dict[Stage, ImageRecord]

    def summary(self) -> dict[str, dict[str, str]]:
        """The `build --json` document: each stage's ref, digest and pinned image."""
        return {stage: image.model_dump() for stage, image in self.images.items()}


def build(
    spec: Spec,
    engine: Engine,
    *,
    targets: Iterable[Stage] = STAGES,
    push: bool = False,
    network: str | None = None,
    rebuild: bool = False,
    on_line: LineSink = lambda line: None,
) -> BuildResult:
    """Build (and push) the spec's images; images whose content tag already exists are reused."""
    if push and not spec.images.repository:
        raise InvalidInputError(f'{spec.source}: --push needs images.repository (e.g. "registry:5000/team/model").')
    context = render(spec, buildkit=engine.buildkit)
    repository = spec.images.repository or f"mreg/{spec.model.name}"
    refs: dict[Stage, str] = {stage: f"{repository}:{context.tag(stage)}" for stage in targets}
    images: dict[str, BuiltImage] = {}
    missing: dict[str, str] = {}
    for stage, ref in refs.items():
        existing = None if rebuild else _existing(engine, ref, push=push, on_line=on_line)
        if existing is None:
            missing[stage] = ref
        else:
            on_line(f"[{stage}] {ref} is up to date ({existing.digest})")
            images[stage] = existing
    if missing:
        with tempfile.TemporaryDirectory(prefix="mreg-context-") as directory:
            context.write(Path(directory))
            images.update(engine.build(Path(directory), missing, push=push, network=network, on_line=on_line))
    result = BuildResult(
        spec_sha256=spec.digest(),
        context_sha256=context.digest(),
        buildkit=engine.buildkit,
        images={stage: _image_record(images[stage]) for stage in refs},
    )
    return _save_build_result(spec, result)


def register(
    spec: Spec,
    model_file: Path,
    *,
    build_result: Path | None = None,
    on_progress: Progress | None = None,
) -> Record:
    """Upload the model binary, then write the next immutable version of the model's record."""
    built = load_build_result(spec, build_result)
    if not model_file.is_file():
        raise InvalidInputError(f"{model_file}: no such model file.")
    stored = open_object_store(spec.storage.uri, spec.root).put_file(model_file, on_progress=on_progress)
    model = ModelFile(uri=stored.uri, sha256=stored.sha256, size=stored.size, filename=model_file.name)
    git = git_info(spec.root)
    created_at = datetime.now(UTC).replace(microsecond=0)

    def make(version: int) -> Record:
        return Record(
            name=spec.model.name,
            version=version,
            model=model,
            images=dict(built.images),
            packages={
                "shared": sorted(spec.packages.shared),
                "train": sorted(spec.packages.train),
                "serve": sorted(spec.packages.serve),
            },
            python=spec.python.version,
            spec_sha256=built.spec_sha256,
            created_at=created_at,
            git=git,
        )

    return open_record_store(spec.registry.uri, spec.root).create(spec.model.name, make)


def load_build_result(spec: Spec, path: Path | None = None) -> BuildResult:
    """The saved build result, refused when it is missing, partial or from another spec."""
    path = path or spec.state_dir / BUILD_RESULT
    try:
        result = BuildResult.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no build result; run `mreg build` first.") from None
    except (OSError, ValidationError) as exc:
        raise InvalidInputError(f"{path}: not a build result written by mreg build ({exc}).") from None
    if result.spec_sha256 != spec.digest() or result.context_sha256 != render(spec, buildkit=result.buildkit).digest():
        raise InvalidInputError(
            f"{path}: the images were built from another version of {spec.source} or of the files it copies; "
            "run `mreg build` again."
        )
    absent = [stage for stage in STAGES if stage not in result.images]
    if absent:
        raise InvalidInputError(f"{path}: no {' or '.join(absent)} image was built; run `mreg build --target all`.")
    return result


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
    return GitInfo(commit=commit, dirty=bool(status.strip()))


def _image_record(image: BuiltImage) -> ImageRecord:
    return ImageRecord(ref=image.ref, digest=image.digest, image=image.image)


def _existing(engine: Engine, ref: str, *, push: bool, on_line: LineSink) -> BuiltImage | None:
    if push:
        digest = engine.registry_digest(ref)
        if digest is not None:
            return BuiltImage.pushed(ref, digest)
        return engine.push(ref, on_line=on_line) if engine.local_image_id(ref) else None
    image_id = engine.local_image_id(ref)
    return BuiltImage.local(ref, image_id) if image_id else None


def _save_build_result(spec: Spec, result: BuildResult) -> BuildResult:
    """Merge with a saved result of the same context (one target at a time), then save atomically."""
    state = spec.state_dir
    state.mkdir(parents=True, exist_ok=True)
    (state / ".gitignore").write_text("# mreg's local state: build results, and the default stores\n*\n")
    path = state / BUILD_RESULT
    try:
        saved = BuildResult.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        saved = None
    if saved is not None and saved.context_sha256 == result.context_sha256:
        result = result.model_copy(update={"images": {**saved.images, **result.images}})
    descriptor, temporary = tempfile.mkstemp(dir=state, prefix=".build-")
    with os.fdopen(descriptor, "w") as handle:
        handle.write(result.model_dump_json(indent=2))
    Path(temporary).replace(path)
    return result
