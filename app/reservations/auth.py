"""Who may call the reservation endpoints, by role. Whose reservation a caller may change
is the domain's rule (``check_may_change``), applied by the service before preconditions."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.deps import Call, Services, calling
from app.http.auth import PrincipalDep, require_roles
from app.identity import Principal, Role
from app.reservations.service import ReservationService

# Reads: any authenticated caller.
Reader = PrincipalDep
# Booking: people and pipelines; agents run what is booked, they do not book.
BOOKERS = (Role.USER, Role.CI, Role.ADMIN)
Booker = Annotated[Principal, Depends(require_roles(*BOOKERS))]
# Moving, cancelling, releasing: people and pipelines (never agents); of those, the domain
# admits the owner or an admin.
Holder = Booker


def _reservations(services: Services) -> ReservationService:
    return services.reservations


# The hottest routes' one dependency each: the service and the caller (app/deps.py).
ReservationReading = Annotated[Call[ReservationService], calling(_reservations)]
Booking = Annotated[Call[ReservationService], calling(_reservations, *BOOKERS)]
