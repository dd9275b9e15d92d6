"""What a client expects of a resource's version (HTTP's If-Match, in domain terms)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class VersionExpectation:
    """Any existing version (``If-Match: *``), or one of a set of versions."""

    any_version: bool
    versions: frozenset[int]

    def allows(self, version: int) -> bool:
        return self.any_version or version in self.versions
