"""botocore's data loader, without its scan of every service directory before it loads a model.

Before loading a service's model, botocore lists the services it knows to check that the service exists:
about 420 directories, listed again for each kind of file (the model, the endpoint rules): about 40 ms of
each process that makes an S3 client (measured in fresh processes). This loader answers "does this
service exist" from that service's own directory, and lists every service only when the list itself is
asked for. Imported by `mreg._s3` when it creates a client, so that botocore is imported only then.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import overload

from botocore.loaders import Loader, create_loader


def service_loader(data_path: str | None) -> Loader:
    """A loader with the search paths botocore's own would have for this `data_path` (AWS_DATA_PATH)."""
    paths = create_loader(data_path).search_paths
    return ServiceLoader(extra_search_paths=paths, include_default_search_paths=False)


class ServiceLoader(Loader):
    """botocore's Loader, whose list of available services is checked one service at a time."""

    def list_available_services(self, type_name: str) -> Sequence[str]:  # type: ignore[override]
        # a Sequence where botocore's stubs say list: botocore only tests membership and iterates
        return KnownServices(self, type_name)

    def has_service(self, name: str, type_name: str) -> bool:
        """Whether some API version of service `name` has a `type_name` file, in any search path."""
        for path in self.search_paths:
            service = Path(path, name)
            if service.is_dir() and any(self.file_loader.exists(str(v / type_name)) for v in service.iterdir()):
                return True
        return False


class KnownServices(Sequence[str]):
    """The services with a `type_name` file: a membership test looks at one directory, anything else
    lists them all (as botocore's Loader does)."""

    def __init__(self, loader: ServiceLoader, type_name: str) -> None:
        self._loader = loader
        self._type_name = type_name

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and os.sep not in name and self._loader.has_service(name, self._type_name)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._all[index]

    def __len__(self) -> int:
        return len(self._all)

    @cached_property
    def _all(self) -> list[str]:
        services: list[str] = Loader.list_available_services(self._loader, self._type_name)
        return services
