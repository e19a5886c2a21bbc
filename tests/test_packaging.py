"""What a user installing the package gets: the wheel, its command, its entry point, its license."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import lightning_plateau

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding a non-editable install of the package built from this checkout (its dependencies come
    from the test's own environment through a .pth file, so nothing is downloaded)."""
    root = tmp_path_factory.mktemp("install")
    wheels = root / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (wheel,) = wheels.glob("lightning_plateau-*.whl")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    return venv


def _run(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # From a directory outside the checkout, so the installed copy is imported, not the source tree.
    return subprocess.run(list(args), cwd=venv, capture_output=True, text=True, check=False)


def test_packaging_python_m_version_from_a_wheel(installed: Path) -> None:
    """`python -m lightning_plateau --version` in a fresh venv with a non-editable install."""
    result = _run(installed, str(installed / "bin" / "python"), "-m", "lightning_plateau", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"lightning-plateau {lightning_plateau.__version__}"
    where = _run(
        installed,
        str(installed / "bin" / "python"),
        "-c",
        "import lightning_plateau; print(lightning_plateau.__file__)",
    )
    assert str(installed) in where.stdout


def test_packaging_command_and_entry_point_from_a_wheel(installed: Path) -> None:
    """The `lightning-plateau` script and Lightning's callbacks_factory entry point come with the wheel."""
    result = _run(installed, str(installed / "bin" / "lightning-plateau"), "--version")
    assert result.returncode == 0, result.stderr
    assert lightning_plateau.__version__ in result.stdout
    code = (
        "from importlib.metadata import entry_points;"
        "print([e.value for e in entry_points(group='lightning.pytorch.callbacks_factory')])"
    )
    listed = _run(installed, str(installed / "bin" / "python"), "-c", code)
    assert "lightning_plateau.callback:_callbacks_factory" in listed.stdout


def test_packaging_wheel_carries_the_license(installed: Path) -> None:
    """The Apache-2.0 license the metadata claims is in the distribution."""
    licenses = list(installed.rglob("lightning_plateau-*.dist-info/**/LICENSE*"))
    assert licenses
    assert "Apache License" in licenses[0].read_text()
