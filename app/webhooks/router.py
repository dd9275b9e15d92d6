"""HTTP for webhooks: parse, authorise, call the service, render. No rules live here."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from app.deps import ActorDep, WebhookServiceDep
from app.http.etag import IfMatchDep, OptionalIfMatchDep
from app.http.pagination import PageOut, PagerDep, render_page
from app.http.query_params import KnownQueryRoute
from app.http.responses import json_bytes_response, resource_response
from app.webhooks.auth import Subscriber
from app.webhooks.domain import WebhookChanges
from app.webhooks.schemas import (
    DeliveryOut,
    WebhookCreate,
    WebhookOut,
    WebhookPatch,
    WebhookWithSecret,
)
from app.webhooks.service import NewWebhook

router = APIRouter(
    prefix="/v1/webhooks",
    tags=["webhooks"],
    route_class=KnownQueryRoute,
    responses={403: {"description": "Agents manage no webhooks"}},
)

WebhookId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f-]+$")]
DeliveryId = WebhookId
_NOT_YOURS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such webhook, or it is another's"}
}


@router.post(
    "",
    status_code=201,
    response_model=WebhookWithSecret,
    operation_id="create_webhook",
    responses={422: {"description": "The URL is refused (scheme, address) or a glob is"}},
)
async def create_webhook(
    body: WebhookCreate, service: WebhookServiceDep, actor: ActorDep, _: Subscriber
) -> Response:
    """Subscribe a URL to events (type globs such as `reservation.*`, optionally one
    bench's or one user's). The answer holds the signing secret: it is shown only here."""
    webhook = await service.create(
        NewWebhook(
            url=body.url,
            events=tuple(body.events),
            bench_id=body.bench_id,
            user_id=body.user_id,
            format=body.format,
        ),
        actor,
    )
    return resource_response(
        WebhookWithSecret.with_secret(webhook),
        webhook.version,
        status_code=201,
        location=f"/v1/webhooks/{webhook.webhook_id}",
    )


@router.get("", response_model=PageOut[WebhookOut], operation_id="list_webhooks")
async def list_webhooks(
    service: WebhookServiceDep, pager: PagerDep, principal: Subscriber
) -> Response:
    """The caller's subscriptions (an admin's: everyone's), by id."""
    scope = f"webhooks:{principal.subject}"
    page = await service.find(principal, pager.limit, pager.start_after(scope, {}))
    return render_page(page.items, WebhookOut.of, pager.next_cursor(scope, {}, page.next_after))


@router.get(
    "/{webhook_id}", response_model=WebhookOut, operation_id="get_webhook", responses=_NOT_YOURS
)
async def get_webhook(
    webhook_id: WebhookId, service: WebhookServiceDep, principal: Subscriber
) -> Response:
    """One subscription (the secret is never shown again)."""
    webhook = await service.get(webhook_id, principal)
    return resource_response(WebhookOut.of(webhook), webhook.version)


@router.patch(
    "/{webhook_id}",
    response_model=WebhookOut,
    operation_id="update_webhook",
    responses=_NOT_YOURS,
)
async def update_webhook(
    webhook_id: WebhookId,
    body: WebhookPatch,
    service: WebhookServiceDep,
    actor: ActorDep,
    expectation: IfMatchDep,
    _: Subscriber,
) -> Response:
    """Change a subscription; needs If-Match. `state: active` re-enables a disabled one.
    An empty `bench_id` or `user_id` removes that filter."""
    changes = WebhookChanges(
        url=body.url,
        events=None if body.events is None else tuple(body.events),
        bench_id=body.bench_id,
        user_id=body.user_id,
        format=body.format,
        state=body.state,
    )
    webhook = await service.update(webhook_id, changes, expectation, actor)
    return resource_response(WebhookOut.of(webhook), webhook.version)


@router.delete(
    "/{webhook_id}", status_code=204, operation_id="delete_webhook", responses=_NOT_YOURS
)
async def delete_webhook(
    webhook_id: WebhookId,
    service: WebhookServiceDep,
    actor: ActorDep,
    expectation: IfMatchDep,
    _: Subscriber,
) -> Response:
    """Unsubscribe; needs If-Match. Deliveries still open are not sent."""
    await service.delete(webhook_id, expectation, actor)
    return Response(status_code=204)


@router.post(
    "/{webhook_id}/rotate-secret",
    response_model=WebhookWithSecret,
    operation_id="rotate_webhook_secret",
    responses=_NOT_YOURS,
)
async def rotate_webhook_secret(
    webhook_id: WebhookId,
    service: WebhookServiceDep,
    actor: ActorDep,
    expectation: OptionalIfMatchDep,
    _: Subscriber,
) -> Response:
    """A new signing secret, shown once; deliveries from now on are signed with it."""
    webhook = await service.rotate_secret(webhook_id, expectation, actor)
    return resource_response(WebhookWithSecret.with_secret(webhook), webhook.version)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=PageOut[DeliveryOut],
    operation_id="list_webhook_deliveries",
    responses=_NOT_YOURS,
)
async def list_webhook_deliveries(
    webhook_id: WebhookId, service: WebhookServiceDep, pager: PagerDep, principal: Subscriber
) -> Response:
    """Every delivery, oldest event first, with each attempt: time, status, latency and
    the first 1 KB of the answer."""
    scope = f"deliveries:{webhook_id}"
    page = await service.deliveries(
        webhook_id, principal, pager.limit, pager.start_after(scope, {})
    )
    return render_page(page.items, DeliveryOut.of, pager.next_cursor(scope, {}, page.next_after))


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=DeliveryOut,
    operation_id="redeliver_webhook_delivery",
    responses=_NOT_YOURS,
)
async def redeliver(
    webhook_id: WebhookId,
    delivery_id: DeliveryId,
    service: WebhookServiceDep,
    actor: ActorDep,
    _: Subscriber,
) -> Response:
    """Send it again, whatever became of it (its attempts so far stay listed)."""
    delivery = await service.redeliver(webhook_id, delivery_id, actor)
    return json_bytes_response(DeliveryOut.of(delivery).model_dump_json().encode(), status_code=202)


@router.post(
    "/{webhook_id}/ping",
    status_code=202,
    response_model=DeliveryOut,
    operation_id="ping_webhook",
    responses=_NOT_YOURS,
)
async def ping_webhook(
    webhook_id: WebhookId, service: WebhookServiceDep, actor: ActorDep, _: Subscriber
) -> Response:
    """Send a `webhook.ping` event to this subscription alone, to try the receiver."""
    delivery = await service.ping(webhook_id, actor)
    return json_bytes_response(DeliveryOut.of(delivery).model_dump_json().encode(), status_code=202)
