"""Webhook endpoint and delivery use cases.

Services never commit: the request's transaction does.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.crypto import RecipientCipher
from payoutsvc.db.base import utcnow
from payoutsvc.errors import (
    EndpointDisabled,
    FieldError,
    ServiceError,
    TooManyEndpoints,
    WebhookUrlRefused,
    not_found,
    validation_failed,
)
from payoutsvc.ids import new_id
from payoutsvc.messages import message
from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.models import DeliveryStatus, WebhookEndpoint
from payoutsvc.webhooks.presenter import (
    delivery_detail_json,
    delivery_json,
    endpoint_json,
)
from payoutsvc.webhooks.repository import WebhookRepository
from payoutsvc.webhooks.schemas import (
    ResendDeliveries,
    RotateSecret,
    WebhookEndpointCreate,
    WebhookEndpointUpdate,
)
from payoutsvc.webhooks.signing import generate_secret
from payoutsvc.webhooks.ssrf import Resolver, UnsafeWebhookUrl, check_url, check_url_syntax

log = structlog.get_logger(__name__)

# A registration waits at most this long for DNS before refusing the URL.
URL_CHECK_TIMEOUT_SECONDS = 10.0
DISABLED_BY_API = "disabled through the API"


def _secret_binding(endpoint_id: str) -> str:
    # Associated data of the encrypted secret: ties the blob to this endpoint, and keeps it
    # apart from recipient blobs encrypted with the same key.
    return f"webhook-endpoint-secret:{endpoint_id}"


def seal_secret(cipher: RecipientCipher, endpoint_id: str, secret: str) -> bytes:
    return cipher.encrypt(secret.encode(), _secret_binding(endpoint_id))


def unseal_secret(cipher: RecipientCipher, endpoint_id: str, blob: bytes) -> str:
    return cipher.decrypt(blob, _secret_binding(endpoint_id)).decode()


def url_refused(code: str, message: str) -> ServiceError:
    return WebhookUrlRefused(
        f"The webhook URL cannot be used: {message}.", errors=[FieldError("url", code, message)]
    )


def endpoint_disabled(endpoint_id: str) -> ServiceError:
    return EndpointDisabled(
        f"Endpoint {endpoint_id} is disabled; enable it (PATCH enabled=true) before re-sending.",
        title="Webhook endpoint is disabled",
    )


class WebhookService:
    def __init__(
        self, session: AsyncSession, runtime: Runtime, resolver: Resolver | None = None
    ) -> None:
        self.session = session
        self.runtime = runtime
        self.resolver = resolver
        self.repo = WebhookRepository(session)

    async def check_url(self, url: str) -> None:
        """The SSRF guard at registration: https and public addresses only. The sender checks
        again on every attempt, because DNS can change.

        With private targets allowed (development, tests) any address is acceptable, so only
        the URL's form is checked: no DNS lookup happens until the first attempt.
        """
        allow_private = self.runtime.settings.webhook_allow_private
        try:
            if allow_private:
                check_url_syntax(url, allow_private=True)
                return
            async with asyncio.timeout(URL_CHECK_TIMEOUT_SECONDS):
                await check_url(url, allow_private=False, resolver=self.resolver)
        except UnsafeWebhookUrl as exc:
            raise url_refused(exc.code, exc.message) from None
        except TimeoutError:
            raise url_refused(
                "unresolvable_host", "the host name did not resolve in time"
            ) from None

    # -- endpoints -----------------------------------------------------------------------------
    async def create_endpoint(
        self, integration_id: str, body: WebhookEndpointCreate
    ) -> dict[str, Any]:
        await self.check_url(body.url)  # before the lock: it may wait for DNS
        await self.repo.lock_endpoint_list(integration_id)
        cap = self.runtime.settings.webhook_max_endpoints
        if await self.repo.count_endpoints(integration_id) >= cap:
            raise TooManyEndpoints(message("too_many_endpoints", cap=cap))
        now = utcnow()
        endpoint_id = new_id("we", int(now.timestamp() * 1000))
        secret = generate_secret()
        values = {
            "id": endpoint_id,
            "integration_id": integration_id,
            "url": body.url,
            "events": body.events,
            "description": body.description,
            "enabled": True,
            "disabled_reason": None,
            "disabled_at": None,
            "secret_encrypted": seal_secret(self.runtime.cipher, endpoint_id, secret),
            "previous_secret_encrypted": None,
            "previous_secret_expires_at": None,
            "failing_since": None,
            "created_at": now,
            "updated_at": now,
        }
        await self.repo.insert_endpoint(values)
        log.info("webhook.endpoint_created", endpoint_id=endpoint_id, integration_id=integration_id)
        return {**endpoint_json(_Values(values)), "secret": secret}

    async def _endpoint(self, endpoint_id: str, visible_integration: str | None) -> WebhookEndpoint:
        endpoint = await self.repo.get_endpoint(endpoint_id, visible_integration)
        if endpoint is None:
            raise not_found("Webhook endpoint", endpoint_id)
        return endpoint

    async def get_endpoint(
        self, endpoint_id: str, visible_integration: str | None
    ) -> dict[str, Any]:
        return endpoint_json(await self._endpoint(endpoint_id, visible_integration))

    async def list_endpoints(
        self, visible_integration: str | None, limit: int, before_id: str | None
    ) -> list[dict[str, Any]]:
        rows = await self.repo.list_endpoints(visible_integration, limit, before_id)
        return [endpoint_json(e) for e in rows]

    async def update_endpoint(
        self, endpoint_id: str, visible_integration: str | None, body: WebhookEndpointUpdate
    ) -> dict[str, Any]:
        given = body.model_fields_set
        nulls = [
            FieldError(name, "required", f"{name} cannot be null; leave it out to keep it")
            for name in ("url", "events", "enabled")
            if name in given and getattr(body, name) is None
        ]
        if nulls:
            raise validation_failed(nulls)
        current = await self._endpoint(endpoint_id, visible_integration)
        now = utcnow()
        values: dict[str, Any] = {"updated_at": now}
        if "url" in given and body.url is not None and body.url != current.url:
            await self.check_url(body.url)
            values["url"] = body.url
        if "events" in given and body.events is not None:
            values["events"] = body.events
        if "description" in given:
            values["description"] = body.description
        if body.enabled is True and not current.enabled:
            values.update(enabled=True, disabled_reason=None, disabled_at=None, failing_since=None)
        elif body.enabled is False and current.enabled:
            values.update(enabled=False, disabled_reason=DISABLED_BY_API, disabled_at=now)
        row = await self.repo.update_endpoint(endpoint_id, visible_integration, values)
        if row is None:
            raise not_found("Webhook endpoint", endpoint_id)
        if values.get("enabled") is False:
            await self.repo.cancel_pending(
                [endpoint_id], f"canceled: endpoint {DISABLED_BY_API}", now
            )
        log.info("webhook.endpoint_updated", endpoint_id=endpoint_id, fields=sorted(given))
        return endpoint_json(row)

    async def delete_endpoint(self, endpoint_id: str, visible_integration: str | None) -> None:
        if not await self.repo.delete_endpoint(endpoint_id, visible_integration):
            raise not_found("Webhook endpoint", endpoint_id)
        log.info("webhook.endpoint_deleted", endpoint_id=endpoint_id)

    async def rotate_secret(
        self, endpoint_id: str, visible_integration: str | None, body: RotateSecret
    ) -> dict[str, Any]:
        """A new current secret; the old one keeps signing beside it for the grace period,
        so a receiver can deploy the new secret without rejecting messages meanwhile."""
        current = await self._endpoint(endpoint_id, visible_integration)
        now = utcnow()
        secret = generate_secret()
        keep_previous = body.grace_period_seconds > 0
        values: dict[str, Any] = {
            "secret_encrypted": seal_secret(self.runtime.cipher, endpoint_id, secret),
            "previous_secret_encrypted": current.secret_encrypted if keep_previous else None,
            "previous_secret_expires_at": (
                now + timedelta(seconds=body.grace_period_seconds) if keep_previous else None
            ),
            "updated_at": now,
        }
        row = await self.repo.update_endpoint(endpoint_id, visible_integration, values)
        if row is None:
            raise not_found("Webhook endpoint", endpoint_id)
        log.info("webhook.secret_rotated", endpoint_id=endpoint_id, grace=body.grace_period_seconds)
        return {**endpoint_json(row), "secret": secret}

    # -- deliveries ----------------------------------------------------------------------------
    async def list_deliveries(
        self,
        endpoint_id: str,
        visible_integration: str | None,
        limit: int,
        before_id: str | None,
        payout_id: str | None,
        status: str | None,
    ) -> list[dict[str, Any]]:
        await self._endpoint(endpoint_id, visible_integration)
        rows = await self.repo.list_deliveries(endpoint_id, limit, before_id, payout_id, status)
        return [delivery_json(d) for d in rows]

    async def get_delivery(
        self, delivery_id: str, visible_integration: str | None
    ) -> dict[str, Any]:
        delivery = await self.repo.get_delivery(delivery_id, visible_integration)
        if delivery is None:
            raise not_found("Webhook delivery", delivery_id)
        attempts = await self.repo.attempts_for(delivery_id)
        return delivery_detail_json(delivery, list(attempts))

    async def retry_delivery(
        self, delivery_id: str, visible_integration: str | None
    ) -> dict[str, Any]:
        """Send a delivery again now, with a fresh retry schedule, whatever its status (a
        delivered one is sent once more: receivers de-duplicate on ``webhook-id``)."""
        delivery = await self.repo.get_delivery(delivery_id, visible_integration)
        if delivery is None:
            raise not_found("Webhook delivery", delivery_id)
        endpoint = await self._endpoint(delivery.endpoint_id, visible_integration)
        if not endpoint.enabled:
            raise endpoint_disabled(endpoint.id)
        row = await self.repo.requeue_delivery(delivery_id, visible_integration, utcnow())
        if row is None:
            raise not_found("Webhook delivery", delivery_id)
        log.info("webhook.delivery_requeued", delivery_id=delivery_id)
        return delivery_json(row)

    async def resend_given_up(
        self, endpoint_id: str, visible_integration: str | None, body: ResendDeliveries
    ) -> dict[str, Any]:
        endpoint = await self._endpoint(endpoint_id, visible_integration)
        if not endpoint.enabled:
            raise endpoint_disabled(endpoint_id)
        since = body.since if body.since.tzinfo is not None else body.since.replace(tzinfo=UTC)
        statuses = sorted({DeliveryStatus(s).value for s in body.statuses})
        count = await self.repo.requeue_given_up(endpoint_id, since, statuses, utcnow())
        log.info("webhook.deliveries_requeued", endpoint_id=endpoint_id, count=count)
        return {"requeued": count}


class _Values:
    """Attribute access over the values of an endpoint being inserted (for the presenter)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None
