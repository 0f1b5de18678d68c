"""Multimodal video feature extraction: CLIP frames, Whisper transcripts, hashtag features -> Delta Lake tables."""


def _package_version() -> str:
    """The package's version: ``importlib.metadata`` of the installed distribution, except in
    a source checkout (an editable install included, whose metadata keeps the version it was
    installed at), where ``pyproject.toml`` says. Bumped whenever the outputs change: it is part
    of the feature hash, so a new version re-processes committed videos."""
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        return tomllib.loads(pyproject.read_text())["project"]["version"]
    try:
        return version("video-features")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = _package_version()
