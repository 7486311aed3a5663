"""Self-contained ONNX models: read what a model needs (IR version, opsets) and check the serve image's
onnxruntime can load it, by opening a session on it inside the serve image."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ValidationError

from mreg.engine import Engine
from mreg.errors import EngineError, InvalidInputError
from mreg.records import OnnxInfo

MODEL_IN_CONTAINER = "/tmp/mreg-model"  # noqa: S108 - a path inside a throw-away container
SESSION_SCRIPT = """
import json, sys
try:
    import onnxruntime
except ImportError:
    print(json.dumps({"runtime": None}))
    sys.exit(0)
try:
    onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
except Exception as exc:
    print(json.dumps({"runtime": onnxruntime.__version__, "error": str(exc).strip()}))
else:
    print(json.dumps({"runtime": onnxruntime.__version__, "error": None}))
"""


class _SessionReport(BaseModel):
    runtime: str | None
    error: str | None = None


def find_onnx(model: Path) -> OnnxInfo | None:
    """The ONNX metadata of a model file, or of a directory model's ONNX file (`model.onnx` at its top, else
    its only `*.onnx` file; its external data files stay beside it), or None when there is none."""
    if not model.is_dir():
        return read_onnx(model)
    candidates = sorted(path for path in model.rglob("*.onnx") if path.is_file() and not path.is_symlink())
    preferred = [path for path in candidates if path.parent == model and path.name == "model.onnx"]
    chosen = preferred or (candidates if len(candidates) == 1 else [])
    info = read_onnx(chosen[0]) if chosen else None
    return info.model_copy(update={"path": chosen[0].relative_to(model).as_posix()}) if info else None


def read_onnx(path: Path) -> OnnxInfo | None:
    """The model's ONNX metadata, or None when the file is not an ONNX model (parsed, not guessed).

    A serialized ModelProto starts with its field 1 (`ir_version`, a varint: tag byte 0x08), which every
    valid ONNX model sets; files that start otherwise (pickles, zip archives) are not read in full.
    """
    with path.open("rb") as handle:
        if handle.read(1) != b"\x08":
            return None
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeWarning, UnicodeDecodeError):
        return None
    if model.ir_version <= 0 or not model.opset_import or not model.HasField("graph"):
        return None
    producer = " ".join(part for part in (model.producer_name, model.producer_version) if part) or "unknown"
    opsets = {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}
    return OnnxInfo(ir_version=model.ir_version, opsets=dict(sorted(opsets.items())), producer=producer)


def check_serve_runtime(engine: Engine, serve_image: str, path: Path, info: OnnxInfo) -> OnnxInfo:
    """Open an onnxruntime session on the model inside the serve image (a directory model whole, so that its
    external data is found); refuse when that fails."""
    inside = f"{MODEL_IN_CONTAINER}/{info.path}" if info.path else MODEL_IN_CONTAINER
    output = engine.run(serve_image, ["python", "-c", SESSION_SCRIPT, inside], files={MODEL_IN_CONTAINER: path})
    try:
        report = _SessionReport.model_validate(json.loads(output.strip().splitlines()[-1]))
    except (IndexError, ValueError, ValidationError) as exc:
        raise EngineError(f"the ONNX check in {serve_image} printed no report: {output[-500:]!r}") from exc
    needs = ", ".join(f"{domain} {version}" for domain, version in info.opsets.items())
    if report.runtime is None:
        raise InvalidInputError(
            f"{path}: an ONNX model (IR {info.ir_version}; opsets {needs}), but the serve image has no "
            "onnxruntime; add onnxruntime to packages.serve."
        )
    if report.error is not None:
        raise InvalidInputError(
            f"{path}: the serve image's onnxruntime {report.runtime} cannot load this model "
            f"(IR {info.ir_version}; opsets {needs}): {report.error}"
        )
    return info.model_copy(update={"runtime": f"onnxruntime {report.runtime}"})
