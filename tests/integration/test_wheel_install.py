"""The built wheel works without the repository: it ships topics/ and schemas/ itself.

Offline and quick: the wheel is built without build isolation (this venv's setuptools),
installed with ``--no-deps`` into a fresh venv whose dependencies come from this venv's
site-packages through a ``.pth`` line, and run from a directory outside the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SOURCES = (
    "pyproject.toml",
    "setup.py",
    "MANIFEST.in",
    "README.md",
    "connector",
    "topics",
    "schemas",
)
ROLES = ("deferred", "realtime", "results", "deadletter", "batches", "replays")

PROBE = """
import json, connector
from connector import schemas
from connector.config import Settings
from connector.topics import default_topics_dir
print(json.dumps({
    "package": connector.__file__,
    "topics": str(default_topics_dir(Settings())),
    "schemas": str(schemas.schemas_dir()),
    "parsed": [schemas.parsed_schema(name)["name"] for name in schemas.ALL],
    "history": [version for version, _ in schemas.history(schemas.REQUEST)],
}))
"""


def run(*cmd: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(part) for part in cmd], capture_output=True, text=True, timeout=240, **kwargs
    )
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc


def build_wheel(tmp: Path) -> Path:
    """Build from a copy of the sources, so the checkout gets no build/ or egg-info."""
    source = tmp / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "_shipped")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    dist = tmp / "dist"
    pip = (sys.executable, "-m", "pip")
    run(*pip, "wheel", "--no-build-isolation", "--no-deps", "--no-index", "-q", "-w", dist, source)
    [wheel] = dist.glob("kafka_batch_bridge-*.whl")
    return wheel


def install(wheel: Path, venv: Path) -> Path:
    """A venv holding only the wheel; its dependencies resolve from this venv's site-packages."""
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    # A plain path line: this venv's own .pth files (its editable install) are not run.
    (Path(purelib.stdout.strip()) / "main-venv.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    pip = (sys.executable, "-m", "pip", "--python", python)
    run(*pip, "install", "--no-deps", "--no-index", "-q", wheel)
    return venv / "bin"


def test_installed_wheel_finds_its_topics_and_schemas(
    tmp_path: Path, kafka_bootstrap: str, unique_name: str
) -> None:
    bin_dir = install(build_wheel(tmp_path), tmp_path / "venv")
    elsewhere = tmp_path / "elsewhere"  # no .env, no checkout on sys.path
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHBRIDGE_")}
    env.pop("PYTHONPATH", None)
    env["BATCHBRIDGE_KAFKA__BOOTSTRAP_SERVERS"] = kafka_bootstrap
    names = {role: f"whl.{role}.{unique_name}" for role in ROLES}
    env.update({f"BATCHBRIDGE_TOPICS__{role.upper()}": name for role, name in names.items()})

    probe = json.loads(run(bin_dir / "python", "-c", PROBE, cwd=elsewhere, env=env).stdout)
    package = Path(probe["package"]).parent
    assert package.is_relative_to(tmp_path / "venv"), probe
    assert Path(probe["topics"]) == package / "_shipped" / "topics"
    assert Path(probe["schemas"]) == package / "_shipped" / "schemas"
    assert probe["parsed"] == [
        f"io.batchbridge.v1.{name}"
        for name in ("InferenceRequest", "InferenceResult", "InferenceFailure", "BatchEvent")
    ]
    assert probe["history"], "schemas/history is shipped too"

    dry = run(bin_dir / "batchbridge", "topics", "apply", "--dry-run", cwd=elsewhere, env=env)
    assert "Topics: plan" in dry.stdout
    for name in names.values():
        [line] = [line for line in dry.stdout.splitlines() if name in line]
        assert "create" in line
