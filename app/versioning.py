"""What a client expects of a resource's version (HTTP's If-Match, in domain terms)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class VersionExpectation:
    """Any existing version (``If-Match: *``), or one of a set of versions; or ``missing``:
    the request needed If-Match and sent none. That is refused (428) only once the
    resource is known to exist, since an unknown resource is a 404 whatever it sent."""

    any_version: bool
    versions: frozenset[int]
    missing: bool = False

    def allows(self, version: int) -> bool:
        return not self.missing and (self.any_version or version in self.versions)


MISSING = VersionExpectation(any_version=False, versions=frozenset(), missing=True)
