"""The distribution's version, in one place (client/pyproject.toml repeats it)."""

VERSION = "0.1.0"
