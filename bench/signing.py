"""What signing adds to `mreg register` and checking signatures adds to `mreg verify` and `mreg show`, each a
fresh process, on the local store (the bundled example, its build result with made-up image digests).

    .venv/bin/python bench/signing.py [--runs N]

Baselines, measured in the same invocation and interleaved with the measured runs: `register` without a key,
`verify` and `show` without trusted keys. What every register does either way (the SBOMs, the statement) is
in both. `verify` is pointed at an engine that is not there, so that the image checks (the same in both)
fail at once and the difference is the signature and SBOM checks. Reported: median [min-max] seconds, the
median of the per-run differences in milliseconds, and the ratio of medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `bench` importable

from tests.support import copy_example, save_build
from tests.support.keys import write_key

from bench.common import BIN, Stats, compile_mreg, machine, run_measured, source_state, table, work_directory

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    compile_mreg()
    with work_directory(args.keep) as work:
        project = copy_example(work / "project")
        save_build(project)
        (project / "model.joblib").write_bytes(b"a model" * 10_000)
        private, public = write_key(work, "ci")
        mreg = [str(BIN / "mreg")]
        verify = [*mreg, "verify", "iris-rf:1", "--engine", "docker"]
        cases = {
            "register": (
                ([*mreg, "register", "model.joblib"], {}),
                ([*mreg, "register", "model.joblib"], {"MREG_SIGNING_KEY": str(private)}),
            ),
            "verify": (
                (verify, NO_ENGINE),
                ([*verify, "--trusted-keys", str(public), "--require-signature"], NO_ENGINE),
            ),
            "show": (
                ([*mreg, "show", "iris-rf:1"], {}),
                ([*mreg, "show", "iris-rf:1"], {"MREG_TRUSTED_KEYS": str(public), "MREG_REQUIRE_SIGNATURE": "1"}),
            ),
        }
        # version 1 is signed, so that the checked verify and show runs check a real signature
        run_measured([*mreg, "register", "model.joblib"], _env({"MREG_SIGNING_KEY": str(private)}), project)
        rows = []
        for name, ((base_argv, base_env), (argv, env)) in cases.items():
            baseline, measured = [], []
            for _ in range(args.runs):
                baseline.append(run_measured(base_argv, _env(base_env), project).wall)
                measured.append(run_measured(argv, _env(env), project).wall)
            added = statistics.median(m - b for m, b in zip(measured, baseline, strict=True)) * 1000
            ratio = statistics.median(measured) / statistics.median(baseline)
            rows.append(
                [
                    name,
                    Stats.of(baseline).show("{:.3f}"),
                    Stats.of(measured).show("{:.3f}"),
                    f"{added:+.0f}",
                    f"{ratio:.2f}",
                ]
            )
    print(machine())
    print(source_state())
    print(f"{args.runs} runs of each, interleaved")
    print(table(["command", "baseline s", "signed/checked s", "added ms (median)", "ratio"], rows))


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MREG_")}
    return {**env, **extra}


if __name__ == "__main__":
    main()
