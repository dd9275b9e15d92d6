"""Who may call the reservation endpoints, by role. Whose reservation a caller may change
is the domain's rule (``check_may_change``), applied by the service before preconditions."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.http.auth import PrincipalDep, require_roles
from app.identity import Principal, Role

# Reads: any authenticated caller.
Reader = PrincipalDep
# Booking: people and pipelines; agents run what is booked, they do not book.
Booker = Annotated[Principal, Depends(require_roles(Role.USER, Role.CI, Role.ADMIN))]
# Moving, cancelling, releasing: people and pipelines (never agents); of those, the domain
# admits the owner or an admin.
Holder = Booker
