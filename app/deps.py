"""FastAPI dependencies shared by every router: the store, the clock, the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.clock import Clock
from app.http.auth import PrincipalDep
from app.identity import Actor
from app.logs import request_id_var
from app.settings import Settings
from app.store.base import Store


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_actor(principal: PrincipalDep) -> Actor:
    return Actor(principal=principal, request_id=request_id_var.get())


StoreDep = Annotated[Store, Depends(get_store)]
ClockDep = Annotated[Clock, Depends(get_clock)]
ActorDep = Annotated[Actor, Depends(get_actor)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
