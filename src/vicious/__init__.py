"""vicious: measure, detect and blunt input reconstruction from a classifier's outputs."""

__version__ = "0.1.0"
