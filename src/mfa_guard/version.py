"""The kit's version: the installed distribution's (it lives in pyproject.toml only)."""

from importlib import metadata

__version__ = metadata.version("mfa-guard")
