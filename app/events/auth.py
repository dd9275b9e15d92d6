"""Who may read events: any authenticated caller, as for calendars and runs."""

from __future__ import annotations

from app.http.auth import PrincipalDep

Reader = PrincipalDep
