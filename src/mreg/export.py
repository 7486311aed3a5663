"""A record's pinned packages in the formats other tools install from: requirements.txt, MLflow's
`python_env.yaml`, and `conda.yaml`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # annotations only: `mreg deps` on a cached record imports no more than it must
    from mreg.records import Record
    from mreg.spec import Stage

Format = Literal["requirements", "python-env", "conda"]
FORMATS: tuple[Format, ...] = ("requirements", "python-env", "conda")


def stage_pins(record: Record, stage: Stage) -> list[str]:
    """Every `name==version` installed in the record's image of `stage`."""
    return sorted([*record.packages["shared"], *record.packages[stage]])


def export(record: Record, stage: Stage, output: Format) -> str:
    """The pins of one image of `record` as the text of `output`."""
    pins = stage_pins(record, stage)
    header = f"# {record.name}:{record.version}, {stage} image {record.images[stage].image}, written by mreg deps\n"
    if output == "requirements":
        return header + "".join(f"{pin}\n" for pin in pins)
    listed = "".join(f"  - {json.dumps(pin)}\n" for pin in pins)
    if output == "python-env":
        return f"{header}python: {json.dumps(record.python)}\nbuild_dependencies:\n  - pip\ndependencies:\n{listed}"
    pip_listed = listed.replace("  - ", "      - ")
    return (
        f"{header}name: {json.dumps(f'{record.name}-{record.version}-{stage}')}\n"
        "channels:\n  - conda-forge\n"
        f"dependencies:\n  - {json.dumps(f'python={record.python}')}\n  - pip\n  - pip:\n{pip_listed}"
    )
