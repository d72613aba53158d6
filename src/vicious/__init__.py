"""vicious: measure, detect and blunt input reconstruction from a classifier's outputs."""

__version__ = "0.1.0"


def reads_version(written: str) -> bool:
    """Whether files written by vicious ``written`` fit this version: same major.minor."""
    return written.split(".")[:2] == __version__.split(".")[:2]
