"""Print nnstudy's pip requirements for a Docker image, one a line.

    python docker/requirements.py cpu|gpu [pyproject.toml] > requirements.txt

cpu: pyproject's dependencies as they are (pip evaluates their platform markers: tensorflow-cpu on
     x86_64, tensorflow elsewhere).
gpu: the same without the TensorFlow entries, plus ``tensorflow[and-cuda]`` with the version range of
     pyproject's tensorflow-cpu entry (CUDA and cuDNN come as pip packages: the host needs only the
     NVIDIA driver and the NVIDIA Container Toolkit), and the ``gpu-metrics`` extra (NVML: the trial
     runs' ``system/gpu_*`` metrics).

Used by the Dockerfile (standard library only: it runs before anything is installed).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

TENSORFLOW = ("tensorflow", "tensorflow-cpu")
_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*)")


def _name_and_range(requirement: str) -> tuple[str, str]:
    match = _REQUIREMENT.match(requirement)
    if match is None:
        raise SystemExit(f"pyproject.toml: cannot read the requirement {requirement!r}")
    return match.group(1).lower().replace("_", "-"), match.group(3).strip()


def requirements(device: str, pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    dependencies: list[str] = project["dependencies"]
    if device == "cpu":
        return list(dependencies)
    if device != "gpu":
        raise SystemExit(f"DEVICE={device!r}: allowed: cpu, gpu")
    ranges = {}
    kept = []
    for requirement in dependencies:
        name, version_range = _name_and_range(requirement)
        if name in TENSORFLOW:
            ranges.setdefault(name, version_range)
        else:
            kept.append(requirement)
    version_range = ranges.get("tensorflow-cpu", ranges.get("tensorflow"))
    if version_range is None:
        raise SystemExit("pyproject.toml: no tensorflow-cpu or tensorflow requirement to take the version range from")
    gpu_metrics = project.get("optional-dependencies", {}).get("gpu-metrics", [])
    return [f"tensorflow[and-cuda]{version_range}", *kept, *gpu_metrics]


def main(argv: list[str]) -> None:
    if len(argv) not in (1, 2):
        raise SystemExit("usage: python docker/requirements.py cpu|gpu [pyproject.toml]")
    pyproject = Path(argv[1] if len(argv) == 2 else "pyproject.toml")
    print("\n".join(requirements(argv[0], pyproject)))


if __name__ == "__main__":
    main(sys.argv[1:])
