"""Installed engine versions, read from package metadata only (no engine import, no CUDA), and the
check of a version against an adapter's one requirement (as OpenTelemetry instrumentors declare
``instrumentation_dependencies()``): pyproject's extra repeats it, and a test keeps the two equal."""

from __future__ import annotations

import importlib.metadata
import pathlib

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version


class UnreadableVersion(ValueError):
    """An installed version that is not PEP 440; the message is one line saying so."""


def installed_version(*distributions: str) -> str | None:
    """Version of the first of ``distributions`` that is installed, or None."""
    for dist in distributions:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def has_file(path: str, *distributions: str) -> bool:
    """Whether the first installed of ``distributions`` ships ``path`` (a package-relative file)."""
    for dist in distributions:
        try:
            return pathlib.Path(importlib.metadata.distribution(dist).locate_file(path)).is_file()
        except importlib.metadata.PackageNotFoundError:
            continue
    return False


def release(requirement: Requirement, version: str) -> Version:
    """``version`` of ``requirement``'s package, parsed; ``UnreadableVersion`` if it is not PEP 440."""
    try:
        return Version(version)
    except InvalidVersion:
        raise UnreadableVersion(f"unparsable {requirement.name} version {version!r} (accepted: a PEP 440 version; "
                                f"the adapter supports {requirement})") from None


def lowest(requirement: Requirement) -> Version:
    """The first release ``requirement`` accepts (its ``>=`` bound): older ones lack what the adapter needs."""
    return max(Version(s.version) for s in requirement.specifier if s.operator == ">=")


def checked(requirement: Requirement, version: Version) -> bool:
    """Whether ``version`` lies in the range whose source the adapter was checked against
    (a dev or rc build of a checked release counts)."""
    return requirement.specifier.contains(version, prereleases=True)
