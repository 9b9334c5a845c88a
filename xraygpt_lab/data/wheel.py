"""Files from the ``torchxrayvision`` wheel, fetched with ``pip download --no-deps`` (no install).

The wheel (Apache-2.0) ships tables the toolkit reads at run time, never stores in the
repository: the OpenI reports, real lung segmentations, finding boxes. Each source keeps its
own licence (OpenI: CC BY-NC-ND 4.0; see torchxrayvision's documentation for the others).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from xraygpt_lab.atomic import file_mode
from xraygpt_lab.errors import XrayGPTLabError

CACHE_ENV = "XRAYGPT_LAB_CACHE"
#: pip's per-connection timeout (seconds) and retries: an offline machine, or a network that
#: swallows packets, fails in about this long (measured: 6 s against a server that never answers,
#: under 1 s with no network at all) instead of pip's defaults of 15 s x 5 retries.
PIP_SOCKET_TIMEOUT = 5
PIP_RETRIES = 0


def cache_root() -> Path:
    """``$XRAYGPT_LAB_CACHE``, else ``~/.cache/xraygpt-lab``."""
    base = os.environ.get(CACHE_ENV)
    return Path(base).expanduser() if base else Path.home() / ".cache" / "xraygpt-lab"


def fetch_wheel_member(member: str, target: Path, error: type[XrayGPTLabError] = XrayGPTLabError,
                       hint: str = "", timeout: float = 120.0) -> Path:
    """Download the torchxrayvision wheel into a temporary folder and copy ``member`` (a path
    inside it) to ``target`` atomically. Raises ``error`` with ``hint`` appended on failure."""
    fetch_wheel_members({member: target}, error, hint, timeout)
    return target


def fetch_wheel_members(members: dict[str, Path], error: type[XrayGPTLabError] = XrayGPTLabError,
                        hint: str = "", timeout: float = 120.0) -> dict[str, Path]:
    """Like :func:`fetch_wheel_member` for several members (member -> target), downloading once."""
    with tempfile.TemporaryDirectory(prefix="xraygpt-lab-wheel-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "--no-color", "--quiet",
                   "--timeout", str(PIP_SOCKET_TIMEOUT), "--retries", str(PIP_RETRIES),
                   "--dest", tmp, "torchxrayvision"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise error(f"pip download of torchxrayvision timed out after {timeout:.0f} s{hint}") from exc
        wheels = sorted(Path(tmp).glob("torchxrayvision-*.whl"))
        if result.returncode != 0 or not wheels:
            raise error(f"pip download of torchxrayvision failed ({_pip_reason(result.stderr)}){hint}")
        with zipfile.ZipFile(wheels[-1]) as wheel:
            for member, target in members.items():
                _copy_member(wheel, member, Path(target), error)
    return dict(members)


def _pip_reason(stderr: str) -> str:
    """One line saying why ``pip download`` failed: offline when pip found no index at all."""
    lines = stderr.strip().splitlines() or ["no wheel found"]
    last = lines[-1].removeprefix("ERROR: ").strip()
    if "No matching distribution" in last:
        return f"offline, or no package index reachable; pip: {last}"
    return last


def _copy_member(wheel: zipfile.ZipFile, member: str, target: Path, error: type[XrayGPTLabError]) -> None:
    """Copy one member of the open wheel to ``target`` atomically (fsynced)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with wheel.open(member) as src, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(part, file_mode())
        os.replace(part, target)
    except KeyError as exc:
        raise error(f"{Path(wheel.filename or 'the wheel').name} does not contain {member}") from exc
    finally:
        Path(part).unlink(missing_ok=True)
