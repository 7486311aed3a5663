"""What changed between two versions of a model: a pure function of their records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mreg.records.model import Record


@dataclass(frozen=True)
class Change:
    """One field that differs: its old value (in `a`) and its new one (in `b`); None where it is absent."""

    field: str
    old: Any
    new: Any


@dataclass(frozen=True)
class PackageChange:
    """A distribution added (`old` None), removed (`new` None) or at another version in one image."""

    name: str
    old: str | None
    new: str | None


@dataclass(frozen=True)
class VersionDiff:
    """Version `a` against version `b`: packages per image, then every other field that differs."""

    a: str
    b: str
    packages: dict[str, list[PackageChange]]
    """`train` and `serve`: each image's distributions (its shared ones and its own)."""
    changes: list[Change]
    """Image digests, base image, Python, model, metrics, params, datasets, run URL, spec digest, git commit."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "packages": {
                image: [{"name": c.name, "old": c.old, "new": c.new} for c in changes]
                for image, changes in self.packages.items()
            },
            "changes": [{"field": c.field, "old": c.old, "new": c.new} for c in self.changes],
        }


def diff_records(a: Record, b: Record) -> VersionDiff:
    """How `b` differs from `a`."""
    packages = {image: _package_changes(_pins(a, image), _pins(b, image)) for image in ("train", "serve")}
    return VersionDiff(f"{a.name}:{a.version}", f"{b.name}:{b.version}", packages, _changes(_fields(a), _fields(b)))


def _pins(record: Record, image: str) -> dict[str, str]:
    """An image's distributions (`name==version`), by name as recorded."""
    pins = [*record.packages.get("shared", []), *record.packages.get(image, [])]  # type: ignore[call-overload]
    return dict(pin.partition("==")[::2] for pin in pins)


def _package_changes(old: dict[str, str], new: dict[str, str]) -> list[PackageChange]:
    names = sorted(set(old) | set(new))
    return [PackageChange(name, old.get(name), new.get(name)) for name in names if old.get(name) != new.get(name)]


def _fields(record: Record) -> dict[str, Any]:
    """Every compared field of a record, flattened to `field -> value`."""
    fields: dict[str, Any] = {f"images.{stage}.digest": image.digest for stage, image in record.images.items()}
    fields |= {
        "base_image": record.base_image,
        "python": record.python,
        "model.sha256": record.model.sha256,
        "model.size": record.model.size,
        "spec_sha256": record.spec_sha256,
        "git.commit": record.git.commit if record.git else None,
        "git.dirty": record.git.dirty if record.git else None,
        "run_url": record.run_url,
        "datasets": [f"{d.uri}@sha256:{d.sha256}" if d.sha256 else d.uri for d in record.datasets] or None,
    }
    fields |= {f"metrics.{key}": value for key, value in record.metrics.items()}
    fields |= {f"params.{key}": value for key, value in record.params.items()}
    return fields


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    order = [*old, *(key for key in new if key not in old)]
    return [Change(key, old.get(key), new.get(key)) for key in order if old.get(key) != new.get(key)]
