"""Installed engine versions, read from package metadata only (no engine import, no CUDA)."""

from __future__ import annotations

import importlib.metadata


def installed_version(*distributions: str) -> str | None:
    """Version of the first of ``distributions`` that is installed, or None."""
    for dist in distributions:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
