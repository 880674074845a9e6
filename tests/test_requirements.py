"""What the project installs (issue 22): run requirements apart from the test/lint tools, the trimesh pin the
code needs, and the Makefile targets that install each."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def requirements(name: str) -> dict[str, str]:
    """``{package: specifier}`` of a requirements file (comments dropped)."""
    found = {}
    for line in (REPO / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            package, spec = re.match(r"([A-Za-z0-9_.\-]+)(.*)", line).groups()
            found[package.lower()] = spec.strip()
    return found


def test_test_and_lint_tools_are_dev_requirements_only():
    run, dev = requirements("requirements.txt"), requirements("requirements-dev.txt")
    assert "pytest" not in run and "ruff" not in run
    assert "pytest" in dev and dev["ruff"].startswith("==")


def test_trimesh_is_pinned_to_the_version_the_code_was_written_for():
    import trimesh

    pin = requirements("requirements.txt")["trimesh"]
    written_for = re.search(r"written for trimesh (\d+\.\d+)", (REPO / "utils/geometry/mesh.py").read_text())
    assert pin.startswith("==") and written_for, pin
    assert pin[2:].startswith(written_for.group(1) + ".")
    assert trimesh.__version__ == pin[2:]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_test_and_lint_install_the_dev_requirements():
    # -n: print the commands only; -B: as if nothing were installed yet.
    for target in ("test", "lint"):
        commands = subprocess.run(
            ["make", "-n", "-B", target], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
        assert "pip install -q -r requirements.txt" in commands
        assert "pip install -q -r requirements-dev.txt" in commands
    demo = subprocess.run(["make", "-n", "-B", "demo"], cwd=REPO, capture_output=True, text=True).stdout
    assert "requirements-dev.txt" not in demo
    assert "make lint" in (REPO / ".ci/run").read_text() and "make test" in (REPO / ".ci/run").read_text()
