"""An experiment, not mreg as shipped: `mreg` with up to three start-up changes simulated at run time.

    python bench/lookup_whatif.py CHANGES [mreg arguments ...]      # CHANGES: comma-separated, or "none"

- `spec`: `mreg.records` gets the two constants it needs (MODEL_NAME_RE, MAX_NAME) from a stub module
  instead of importing `mreg.spec` (its pydantic models, `packaging`, `mreg.refs`);
- `botocore`: the S3 client comes from botocore's session, with mreg's client configuration, instead of
  boto3's (boto3 and s3transfer are not imported);
- `exit`: the process ends with `os._exit` once stdout and stderr are flushed, skipping the interpreter's
  teardown of every imported module.

`lookups.py --what-if` runs it next to the real CLI, to size each suggestion in docs/benchmarks.md.
"""

from __future__ import annotations

import os
import re
import sys
import types
from typing import Any


def stub_spec() -> None:
    stub = types.ModuleType("mreg.spec")
    stub.MODEL_NAME_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")  # type: ignore[attr-defined]
    stub.MAX_NAME = 64  # type: ignore[attr-defined]
    sys.modules["mreg.spec"] = stub


def botocore_client() -> None:
    import mreg.records.s3
    import mreg.s3

    def make_client(endpoint_url: str | None = None) -> Any:
        import botocore.session
        from botocore.config import Config

        retries: Any = {"mode": "standard", "max_attempts": mreg.s3.MAX_ATTEMPTS}
        config = Config(
            retries=retries, max_pool_connections=32, connect_timeout=5, read_timeout=60, tcp_keepalive=True
        )
        return botocore.session.get_session().create_client("s3", endpoint_url=endpoint_url, config=config)

    mreg.s3.make_client = make_client
    mreg.records.s3.make_client = make_client  # type: ignore[attr-defined]


def main() -> None:
    changes = set(sys.argv.pop(1).split(","))
    if "spec" in changes:
        stub_spec()
    if "botocore" in changes:
        botocore_client()
    from mreg.cli import main as mreg_main

    try:
        mreg_main()  # the real entry point: it always ends with SystemExit
    except SystemExit as exit:
        if "exit" in changes:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exit.code if isinstance(exit.code, int) else 1)
        raise


if __name__ == "__main__":
    main()
