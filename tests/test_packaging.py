"""The built wheel works outside the repository: default templates ship inside the package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import REPO, pipeline_config, rows_of, subprocess_env, write_rows

pytestmark = pytest.mark.slow  # builds and installs a wheel with pip


def _sh(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(args),
        cwd=str(cwd),
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", **env),
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from a copy of the sources and install it (no deps) into a target dir; return that dir."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(REPO / "annotator", src / "annotator", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    _sh(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(root / "dist"),
        str(src),
        cwd=root,
    )
    (wheel,) = (root / "dist").glob("*.whl")
    assert wheel.name.startswith("annotator_llm-"), wheel.name  # the free distribution name, not `annotator`
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert {f"annotator/prompts/{t}.jinja" for t in ("label", "qa", "rephrase")} <= names
    site = root / "site"
    _sh(sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel), cwd=root)
    return site


def test_installed_wheel_validates_a_pipeline_with_the_default_template(installed: Path, tmp_path: Path):
    work = tmp_path / "elsewhere"
    write_rows(work / "data" / "input.jsonl", rows_of(["The striker scored twice.", "Rates rose again."]))
    cfg = pipeline_config()
    (work / "p.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    env = {"PYTHONPATH": str(installed)}

    where = _sh(sys.executable, "-c", "import annotator; print(annotator.__file__)", cwd=work, **env)
    assert Path(where.stdout.strip()).is_relative_to(installed)  # the wheel's code, not the repo's

    script = installed / "bin" / "annotator"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "annotator.cli"]
    proc = _sh(*cmd, "validate", "p.yaml", cwd=work, **env)
    assert "Choose the one label from the list below" in proc.stdout
    assert "Text: The striker scored twice." in proc.stdout
    assert "not found" not in proc.stdout + proc.stderr
