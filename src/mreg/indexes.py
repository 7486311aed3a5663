"""Private package indexes: where their URLs (credentials included) come from, and how they reach uv.

The URLs come from the environment (`MREG_INDEX_URL`, `MREG_EXTRA_INDEX_URL`) or from files named there
(`MREG_INDEX_URL_FILE`, `MREG_EXTRA_INDEX_URL_FILE`), never from the spec. On the host they reach uv
through its environment; in a build, only as BuildKit secrets, mounted for the install steps and absent
from layers, history, config and labels. Their values are masked in everything mreg prints.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mreg.errors import InvalidInputError

# secret id in the Dockerfile -> (mreg's variable, uv's variable)
SECRETS = {
    "mreg-index-url": ("MREG_INDEX_URL", "UV_INDEX_URL"),
    "mreg-extra-index-url": ("MREG_EXTRA_INDEX_URL", "UV_EXTRA_INDEX_URL"),
}


@dataclass(frozen=True)
class PackageIndexes:
    """The private index URLs configured for this run (secret id -> URL)."""

    urls: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> PackageIndexes:
        """Read `MREG_INDEX_URL` / `MREG_EXTRA_INDEX_URL`, or the files their `_FILE` variants name."""
        environ = os.environ if environ is None else environ
        urls: dict[str, str] = {}
        for secret, (variable, _) in SECRETS.items():
            value = environ.get(variable)
            path = environ.get(f"{variable}_FILE")
            if value is None and path:
                try:
                    value = Path(path).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise InvalidInputError(f"{variable}_FILE={path}: cannot be read ({exc.strerror}).") from exc
            if value:
                if not re.match(r"https?://", value):
                    raise InvalidInputError(f"{variable} must be an http(s):// URL (its value is not shown).")
                urls[secret] = value
        return cls(urls)

    def uv_environment(self) -> dict[str, str]:
        """uv's own variables for these indexes, for a uv process on the host."""
        return {SECRETS[secret][1]: url for secret, url in self.urls.items()}

    def secret_values(self) -> Iterable[str]:
        """Everything that must never be printed: the URLs and the credentials inside them."""
        for url in self.urls.values():
            yield url
            userinfo = re.match(r"https?://([^@/]+)@", url)
            if userinfo:  # the password, or a token given alone as the user name
                user, _, password = userinfo.group(1).partition(":")
                yield password or user

    def mask(self, text: str) -> str:
        """`text` with every secret value (longest first) replaced by ****."""
        for value in sorted(self.secret_values(), key=len, reverse=True):
            text = text.replace(value, "****")
        return text
