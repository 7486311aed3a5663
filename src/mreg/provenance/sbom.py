"""CycloneDX 1.6 SBOMs of mreg's images, from what the skew guard read out of each image.

Built with cyclonedx-python-lib and checked with its strict 1.6 JSON schema validator. The same image gives
the same bytes: the serial number is derived from the inputs, the library's creation timestamp is dropped,
and components are sorted.
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING

from mreg._grammar import parse_reference, registry_host
from mreg.errors import InvalidInputError, MregError

if TYPE_CHECKING:
    from cyclonedx.model.component import Component
    from cyclonedx.validation.json import JsonStrictValidator

_SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:mreg:sbom")
DOCKER_HUB = "docker.io"


def image_purl(reference: str, digest: str | None) -> str:
    """The `pkg:docker` purl of an image (as BuildKit's provenance writes it): its digest as the version when
    known (the tag becomes a qualifier), else its tag; the registry, unless Docker Hub, as `repository_url`."""
    from packageurl import PackageURL

    try:
        parsed = parse_reference(reference)
    except ValueError as exc:
        raise InvalidInputError(f"{reference!r} {exc}.") from exc
    host = registry_host(parsed.name)
    path = parsed.name.removeprefix(f"{host}/")
    if host == DOCKER_HUB:
        path = path.removeprefix("library/")
    namespace, _, name = path.rpartition("/")
    version = digest or parsed.digest or parsed.tag or "latest"
    qualifiers = {} if host == DOCKER_HUB else {"repository_url": host}
    if parsed.tag and version != parsed.tag:
        qualifiers["tag"] = parsed.tag
    return str(
        PackageURL(type="docker", namespace=namespace or None, name=name, version=version, qualifiers=qualifiers)
    )


def image_sbom(
    *,
    model_name: str,
    stage: str,
    image_ref: str,
    image_digest: str,
    python: str,
    packages: Mapping[str, str],
    hashes: Mapping[str, list[str]],
    base_image: str,
    base_image_digest: str | None,
) -> bytes:
    """The CycloneDX 1.6 JSON SBOM of one image: the image as metadata.component, one component per installed
    distribution (`packages`, name -> version) with its purl and the lock's `sha256:<hex>` `hashes`, Python,
    and the base image. Raises MregError when the document does not validate."""
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output import make_outputter
    from cyclonedx.schema import OutputFormat, SchemaVersion
    from packageurl import PackageURL

    package_hashes = {name: sorted(hashes.get(name, [])) for name in packages}
    inputs = {
        "model_name": model_name,
        "stage": stage,
        "image_ref": image_ref,
        "image_digest": image_digest,
        "python": python,
        "packages": dict(packages),
        "hashes": package_hashes,
        "base_image": base_image,
        "base_image_digest": base_image_digest,
    }
    serial = uuid.uuid5(_SERIAL_NAMESPACE, hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest())
    image = _container(image_ref, image_digest)
    image.properties.update([Property(name="mreg:model", value=model_name), Property(name="mreg:stage", value=stage)])
    components = [
        _container(base_image, base_image_digest),
        Component(
            type=ComponentType.PLATFORM,
            name="python",
            version=python,
            bom_ref=f"python@{python}",
            cpe=f"cpe:2.3:a:python:python:{python}:*:*:*:*:*:*:*",
        ),
    ]
    for name, version in packages.items():
        purl = PackageURL(type="pypi", name=name, version=version)
        digests = [HashType(alg=HashAlgorithm.SHA_256, content=d.removeprefix("sha256:")) for d in package_hashes[name]]
        components.append(Component(name=name, version=version, purl=purl, bom_ref=str(purl), hashes=digests))
    bom = Bom(serial_number=serial, metadata=BomMetaData(component=image), components=components)
    bom.register_dependency(image, components)
    document = json.loads(make_outputter(bom, OutputFormat.JSON, SchemaVersion.V1_6).output_as_string())
    del document["metadata"]["timestamp"]  # the library always stamps the time; the same image, the same bytes
    header = {key: document.pop(key) for key in ("$schema", "bomFormat", "specVersion", "serialNumber", "version")}
    text = json.dumps(header | document, indent=2) + "\n"
    error = _validator().validate_str(text)
    if error is not None:
        problem = error.data  # jsonschema's ValidationError: where, and what is wrong there
        raise MregError(
            f"the SBOM of the {stage} image of {model_name} is not valid CycloneDX 1.6: "
            f"{problem.json_path}: {problem.message}."
        )
    return text.encode()


def _container(reference: str, digest: str | None) -> Component:
    """A container component: the image's repository, its digest (else its tag) as version and its purl."""
    from cyclonedx.model import HashAlgorithm, HashType
    from cyclonedx.model.component import Component, ComponentType
    from packageurl import PackageURL

    purl = PackageURL.from_string(image_purl(reference, digest))
    hashes = [HashType(alg=HashAlgorithm.SHA_256, content=digest.removeprefix("sha256:"))] if digest else []
    return Component(
        type=ComponentType.CONTAINER,
        name=parse_reference(reference).name,
        version=purl.version,
        purl=purl,
        bom_ref=str(purl),
        hashes=hashes,
    )


@functools.cache
def _validator() -> JsonStrictValidator:
    """The strict 1.6 validator (its schemas load once)."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    return JsonStrictValidator(SchemaVersion.V1_6)
