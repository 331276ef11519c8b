"""The package as users get it: the sdist is built from the source files, the wheel from the
sdist (``python -m build``, as ``make dist``), the wheel installed into a fresh virtualenv
with nothing but the package index, and the CLI run from there: ``server start``, ``push``,
``worker --burst``, ``status``; the server is stopped by its pid at the end.

Skipped, with the reason, only when ``build`` is not installed or the package index cannot
be reached (pip's cache makes a second run quick)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import _stop_pid, wait_for

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "MANIFEST.in", "src", "docs")
#: What pip or the build frontend print when the index is out of reach.
OFFLINE = re.compile(
    r"NewConnectionError|Network is unreachable|Temporary failure in name resolution|"
    r"Failed to establish a new connection|No matching distribution found for setuptools|"
    r"ConnectTimeout|Max retries exceeded"
)


def _run(args: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    r = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if r.returncode != 0:
        if OFFLINE.search(r.stdout + r.stderr):
            pytest.skip("the package index cannot be reached: " + r.stderr.strip()[-300:])
        raise AssertionError(
            f"{args} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        )
    return r.stdout


@pytest.fixture(scope="module")
def clean_env() -> dict[str, str]:
    """The user's environment: no PYTHONPATH to the sources, no server configured."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "PYTHONPATH" and not k.startswith("FIFOFLOW_") and k != "REDIS_URL"
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, clean_env: dict[str, str]) -> tuple[Path, Path]:
    """(sdist, wheel), built once from a copy of the package's own files."""
    pytest.importorskip("build", reason="python -m build is needed (pip install build)")
    tmp_path = tmp_path_factory.mktemp("build")
    src = tmp_path / "src-copy"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "-o", dist, src], src, clean_env)
    (sdist,) = dist.glob("fifoflow-*.tar.gz")
    (wheel,) = dist.glob("fifoflow-*-py3-none-any.whl")
    return sdist, wheel


@pytest.fixture
def short_home() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="ffwheel", dir="/tmp"))  # a short unix socket path
    yield home
    shutil.rmtree(home, ignore_errors=True)


def test_sdist_and_wheel_hold_what_users_need(built: tuple[Path, Path]) -> None:
    sdist, wheel = built
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert {"LICENSE", "CHANGELOG.md", "README.md", "docs/cli.md"} <= names
    assert "src/fifoflow/scripts/claim.lua" in names
    assert not any(n.startswith(("tests/", "bench/")) for n in names)  # left out, on purpose
    with zipfile.ZipFile(wheel) as z:
        files = set(z.namelist())
        meta = z.read(next(n for n in files if n.endswith(".dist-info/METADATA"))).decode()
    assert "fifoflow/scripts/claim.lua" in files
    assert "fifoflow/dashboard/templates/base.html" in files
    assert "fifoflow/py.typed" in files
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in files)
    assert "License-Expression: Apache-2.0" in meta
    assert "Project-URL: Changelog" in meta and "Classifier: Typing :: Typed" in meta


def test_wheel_installs_in_a_fresh_venv_and_runs(
    built: tuple[Path, Path], tmp_path: Path, clean_env: dict[str, str], short_home: Path
) -> None:
    _, wheel = built
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path, clean_env)
    _run([venv / "bin" / "python", "-m", "pip", "install", "-q", wheel], tmp_path, clean_env)
    work = tmp_path / "work"
    work.mkdir()
    (work / "wheeljob.py").write_text("def double(x: int) -> int:\n    return 2 * x\n")
    env = {**clean_env, "FIFOFLOW_HOME": str(short_home)}
    ff = venv / "bin" / "fifoflow"

    where = _run(
        [venv / "bin" / "python", "-c", "import fifoflow; print(fifoflow.__file__)"], work, env
    )
    assert where.startswith(str(venv)), where  # the installed copy, not the sources

    pid = None
    try:
        started = json.loads(_run([ff, "server", "start", "--json"], work, env))
        pid = started["pid"]
        assert started["running"] and started["home"] == str(short_home)
        (job_id,) = json.loads(
            _run([ff, "push", "wheeljob:double", "--params", '{"x": 21}', "--json"], work, env)
        )
        ran = json.loads(_run([ff, "worker", "wheeljob", "--burst", "--json"], work, env))
        assert ran["exit_code"] == 0 and ran["jobs"] == 1, ran
        status = json.loads(_run([ff, "status", "--json"], work, env))
        assert status["queues"]["default"]["succeeded"] == 1, status
        assert json.loads(_run([ff, "job", job_id, "--json"], work, env))["result"] == 42
        version = _run([ff, "--version"], work, env)
        assert version.strip() == f"fifoflow {wheel.name.split('-')[1]}"
    finally:
        _stop_pid(pid)
    wait_for(lambda: not _alive(pid), timeout=30)


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
