"""Connector use cases: CRUD, the credential test, and inbound triggers. Never commits.

Inbound triggers act through the same services as the API (PayoutService.create and cancel,
ApprovalService.approve and reject): policy, limits, approvals and transitions are theirs.
The helpdesk user named ``actor`` becomes an operator through ``helpdesk_users``; with
``trust_actor`` the verified helpdesk request counts as that operator's own credential, as an
operator-bound key would (payouts/acting.py), otherwise as an integration key naming them.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.auth.service import AuthService
from payoutsvc.connectors.kinds import KINDS, HelpdeskKind
from payoutsvc.connectors.kinds.base import InboundRefused, check_fresh, parse_timestamp
from payoutsvc.connectors.models import HelpdeskConnector
from payoutsvc.connectors.notes import REFUSED
from payoutsvc.connectors.repository import ConnectorRepository
from payoutsvc.connectors.schemas import ConnectorCreate, ConnectorUpdate, InboundTrigger
from payoutsvc.db.base import utcnow
from payoutsvc.errors import (
    CallbackSignatureInvalid,
    FieldError,
    InvalidJson,
    ServiceError,
    UnknownOperator,
    not_found,
    validation_failed,
)
from payoutsvc.http_errors import field_errors_from_pydantic
from payoutsvc.ids import new_id
from payoutsvc.operators.service import OperatorService
from payoutsvc.payouts.acting import Credential
from payoutsvc.payouts.approvals import ApprovalService
from payoutsvc.payouts.schemas import PayoutCreate
from payoutsvc.payouts.service import PayoutService
from payoutsvc.runtime import Runtime
from payoutsvc.webhooks.models import WebhookEndpoint
from payoutsvc.webhooks.outbox import NoteEvent, enqueue_note
from payoutsvc.webhooks.presenter import delivery_json
from payoutsvc.webhooks.repository import WebhookRepository
from payoutsvc.webhooks.service import (
    DISABLED_BY_API,
    WebhookService,
    seal_secret,
    unseal_secret,
)
from payoutsvc.webhooks.ssrf import Resolver, deliver
from payoutsvc.webhooks.transport import make_webhook_client

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class InboundAnswer:
    status_code: int
    body: dict[str, Any]
    replayed: bool = False


def _credentials(kind: HelpdeskKind, given: Mapping[str, str]) -> dict[str, str]:
    missing = [name for name in kind.credential_fields if not given.get(name)]
    extra = sorted(set(given) - set(kind.credential_fields))
    errors = [FieldError(f"credentials.{n}", "required", f"{n} is required.") for n in missing]
    errors += [
        FieldError(f"credentials.{n}", "unknown_field", f"{kind.kind} has no {n}.") for n in extra
    ]
    if errors:
        raise validation_failed(errors)
    return {name: given[name] for name in kind.credential_fields}


def connector_json(connector: HelpdeskConnector, endpoint: Any) -> dict[str, Any]:
    """``endpoint``: its write-back target (an ORM row or a ``targets`` row)."""
    return {
        "id": connector.id,
        "kind": connector.kind,
        "name": connector.name,
        "integration_id": connector.integration_id,
        "base_url": endpoint.url,
        "locale": connector.locale,
        "trust_actor": connector.trust_actor,
        "write_back": connector.write_back,
        "enabled": endpoint.enabled,
        "credential_fields": list(KINDS[connector.kind].credential_fields),
        "inbound_url": f"/v1/connectors/{connector.id}/inbound",
        "created_at": connector.created_at,
        "updated_at": connector.updated_at,
    }


def _enabled_change(
    endpoint: WebhookEndpoint, enabled: bool | None, now: datetime
) -> dict[str, Any]:
    """Enabling clears the failing streak (as for webhook endpoints); disabling records why."""
    if enabled is True and not endpoint.enabled:
        return {
            "enabled": True,
            "disabled_reason": None,
            "disabled_at": None,
            "failing_since": None,
        }
    if enabled is False and endpoint.enabled:
        return {"enabled": False, "disabled_reason": DISABLED_BY_API, "disabled_at": now}
    return {}


class ConnectorService:
    def __init__(
        self, session: AsyncSession, runtime: Runtime, resolver: Resolver | None = None
    ) -> None:
        self.session = session
        self.runtime = runtime
        self.resolver = resolver
        self.repo = ConnectorRepository(session)
        self.targets = WebhookRepository(session)

    # -- CRUD ----------------------------------------------------------------------------------
    async def create(
        self, caller_integration: str, visible: str | None, body: ConnectorCreate
    ) -> dict[str, Any]:
        integration_id = body.integration_id or caller_integration
        if visible is not None and integration_id != visible:
            raise not_found("Integration", integration_id)
        await AuthService(self.session).get_integration(integration_id)
        kind = KINDS[body.kind]
        credentials = _credentials(kind, body.credentials)
        await WebhookService(self.session, self.runtime, self.resolver).check_url(body.base_url)
        now = utcnow()
        connector_id = new_id("hc", int(now.timestamp() * 1000))
        await self.targets.insert_endpoint(
            {
                "id": connector_id,
                "integration_id": integration_id,
                "url": body.base_url,
                "events": body.write_back.events,
                "description": f"helpdesk connector {body.name}",
                "enabled": True,
                "secret_encrypted": self._seal(connector_id, credentials),
                "target_kind": body.kind,
                "target_options": {"locale": body.locale, "tags": body.write_back.tags},
                "created_at": now,
                "updated_at": now,
            }
        )
        await self.repo.insert(
            {
                "id": connector_id,
                "integration_id": integration_id,
                "kind": body.kind,
                "name": body.name,
                "locale": body.locale,
                "trust_actor": body.trust_actor,
                "write_back": body.write_back.model_dump(),
                "created_at": now,
                "updated_at": now,
            }
        )
        log.info("connector.created", connector_id=connector_id, kind=body.kind)
        return await self.get(connector_id, visible)

    def _seal(self, connector_id: str, credentials: Mapping[str, str]) -> bytes:
        return seal_secret(self.runtime.cipher, connector_id, json.dumps(dict(credentials)))

    async def _load(
        self, connector_id: str, visible: str | None
    ) -> tuple[HelpdeskConnector, WebhookEndpoint]:
        connector = await self.repo.get(connector_id, visible)
        endpoint = await self.targets.get_endpoint(connector_id, visible, connector=True)
        if connector is None or endpoint is None:
            raise not_found("Connector", connector_id)
        return connector, endpoint

    async def get(self, connector_id: str, visible: str | None) -> dict[str, Any]:
        return connector_json(*await self._load(connector_id, visible))

    async def list(
        self, visible: str | None, limit: int, before_id: str | None
    ) -> list[dict[str, Any]]:
        connectors = await self.repo.list(visible, limit, before_id)
        targets = {t.id: t for t in await self.targets.targets(c.id for c in connectors)}
        return [connector_json(c, targets[c.id]) for c in connectors if c.id in targets]

    async def update(
        self, connector_id: str, visible: str | None, body: ConnectorUpdate
    ) -> dict[str, Any]:
        connector, endpoint = await self._load(connector_id, visible)
        given = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
        now = utcnow()
        own: dict[str, Any] = {
            k: given[k] for k in ("name", "locale", "trust_actor", "write_back") if k in given
        }
        target: dict[str, Any] = {"updated_at": now}
        if "base_url" in given and given["base_url"] != endpoint.url:
            await WebhookService(self.session, self.runtime, self.resolver).check_url(
                given["base_url"]
            )
            target["url"] = given["base_url"]
        if "credentials" in given:
            credentials = _credentials(KINDS[connector.kind], given["credentials"])
            target["secret_encrypted"] = self._seal(connector_id, credentials)
        write_back = own.get("write_back", connector.write_back)
        target["events"] = write_back["events"]
        target["target_options"] = {
            "locale": own.get("locale", connector.locale),
            "tags": write_back["tags"],
        }
        target.update(_enabled_change(endpoint, given.get("enabled"), now))
        await self.targets.update_endpoint(connector_id, visible, target, connector=True)
        if target.get("enabled") is False:
            await self.targets.cancel_pending([connector_id], "canceled: connector disabled", now)
        await self.repo.update(connector_id, {**own, "updated_at": now})
        log.info("connector.updated", connector_id=connector_id, fields=sorted(given))
        self.session.expire_all()
        return await self.get(connector_id, visible)

    async def delete(self, connector_id: str, visible: str | None) -> None:
        await self._load(connector_id, visible)
        await self.targets.delete_endpoint(connector_id, visible, connector=True)
        await OperatorService(self.session).forget_connector(connector_id)
        await self.repo.delete(connector_id)
        log.info("connector.deleted", connector_id=connector_id)

    async def deliveries(
        self, connector_id: str, visible: str | None, limit: int, before_id: str | None
    ) -> builtins.list[dict[str, Any]]:
        await self._load(connector_id, visible)
        rows = await self.targets.list_deliveries(connector_id, limit, before_id)
        return [delivery_json(d) for d in rows]

    def _credentials_of(self, endpoint: WebhookEndpoint) -> dict[str, str]:
        plain = unseal_secret(self.runtime.cipher, endpoint.id, endpoint.secret_encrypted)
        found: dict[str, str] = json.loads(plain)
        return found

    async def purge_inbound_events(self, before: datetime) -> int:
        """Forget handled inbound events older than ``before`` (redeliveries come within
        minutes to days; Zendesk's are refused by their timestamp anyway)."""
        return await self.repo.purge_events(before)

    # -- the credential test -------------------------------------------------------------------
    async def test(self, connector_id: str, visible: str | None) -> dict[str, Any]:
        """One cheap authenticated call to the helpdesk, through the SSRF guard."""
        connector, endpoint = await self._load(connector_id, visible)
        kind = KINDS[connector.kind]
        request = kind.test_request(endpoint.url, self._credentials_of(endpoint))
        client = make_webhook_client()
        try:
            result = await deliver(
                request.url,
                request.headers,
                request.body,
                method=request.method,
                allow_private=self.runtime.settings.webhook_allow_private,
                timeout=self.runtime.settings.webhook_timeout_seconds,
                client=client,
                resolver=self.resolver,
            )
        finally:
            await client.aclose()
        ok = result.status_code is not None and kind.test_accepted(
            result.status_code, result.response_excerpt
        )
        error = None if ok else (result.error or "the helpdesk did not accept the credentials")
        return {"ok": ok, "status_code": result.status_code, "error": error}

    # -- inbound -------------------------------------------------------------------------------
    async def inbound(
        self, connector_id: str, headers: Mapping[str, str], raw: bytes
    ) -> InboundAnswer:
        """Verify, de-duplicate by ``event_id``, act; a refusal is also written back."""
        connector, endpoint = await self._load(connector_id, None)
        now = utcnow()
        trigger = self._verified(connector, endpoint, headers, raw, now)
        claimed = await self.repo.claim_event(
            {
                "connector_id": connector.id,
                "event_id": trigger.event_id,
                "action": trigger.action,
                "received_at": now,
                "response_status": 0,
                "response_body": "",
            }
        )
        if not claimed:
            stored = await self.repo.stored_answer(connector.id, trigger.event_id)
            assert stored is not None  # the claim found it
            return InboundAnswer(stored[0], json.loads(stored[1] or "{}"), replayed=True)
        answer = await self._act_or_refuse(connector, endpoint, trigger, now)
        await self.repo.answer_event(
            connector.id,
            trigger.event_id,
            answer.status_code,
            json.dumps(answer.body, ensure_ascii=False),
        )
        return answer

    def _verified(
        self,
        connector: HelpdeskConnector,
        endpoint: WebhookEndpoint,
        headers: Mapping[str, str],
        raw: bytes,
        now: datetime,
    ) -> InboundTrigger:
        try:
            KINDS[connector.kind].verify(self._credentials_of(endpoint), headers, raw, now)
        except InboundRefused as exc:
            raise CallbackSignatureInvalid(str(exc), title="Inbound request not verified") from None
        try:
            trigger = InboundTrigger.model_validate_json(raw)
        except ValidationError as exc:
            if any(e["type"] == "json_invalid" for e in exc.errors()):
                raise InvalidJson("The body is not valid JSON.") from None
            raise validation_failed(field_errors_from_pydantic(exc.errors())) from None
        if trigger.timestamp is not None:
            try:
                check_fresh(parse_timestamp(trigger.timestamp), now)
            except InboundRefused as exc:
                raise CallbackSignatureInvalid(str(exc), title="Stale inbound request") from None
        return trigger

    async def _act_or_refuse(
        self,
        connector: HelpdeskConnector,
        endpoint: WebhookEndpoint,
        trigger: InboundTrigger,
        now: datetime,
    ) -> InboundAnswer:
        try:
            async with self.session.begin_nested():  # a refusal undoes the action's writes
                answer = await self._act(connector, trigger)
        except ServiceError as exc:
            answer = InboundAnswer(exc.status, exc.to_problem())
        if answer.status_code >= 400:
            await self._write_refusal(connector, trigger, answer.body, now)
        return answer

    async def _write_refusal(
        self,
        connector: HelpdeskConnector,
        trigger: InboundTrigger,
        problem: Mapping[str, Any],
        now: datetime,
    ) -> None:
        note_id = new_id("hn", int(now.timestamp() * 1000))
        body = {
            "actor": trigger.actor,
            "action": trigger.action,
            "ticket": {"id": trigger.ticket.id},
            "payout_id": trigger.payout_id,
            "problem": {k: problem.get(k) for k in ("code", "title", "detail")},
        }
        note = NoteEvent(note_id, note_id, connector.integration_id, REFUSED, now, body)
        await enqueue_note(self.session, connector.id, note)
        log.info("connector.inbound_refused", connector_id=connector.id, code=problem.get("code"))

    async def _operator(self, connector: HelpdeskConnector, actor: str) -> str:
        operator_id = await OperatorService(self.session).operator_for_helpdesk_user(
            connector.id, actor
        )
        if operator_id is None:
            raise UnknownOperator(
                f"Helpdesk user {actor!r} is not mapped to an operator of this connector "
                "(an operator's helpdesk_users).",
                errors=[FieldError("actor", "unknown_operator", "Not a mapped helpdesk user.")],
            )
        return operator_id

    async def _act(self, connector: HelpdeskConnector, trigger: InboundTrigger) -> InboundAnswer:
        operator_id = await self._operator(connector, trigger.actor)
        # With trust_actor the helpdesk's verified request proves the agent, as a key bound
        # to their operator would; without it, it proves only the helpdesk.
        credential = Credential(operator_id if connector.trust_actor else None, admin=False)
        if trigger.action == "request":
            return await self._request(connector, trigger, credential, operator_id)
        payout_id = await self._ticket_payout(connector, trigger)
        integration = connector.integration_id
        if trigger.action == "approve":
            payout = await ApprovalService(self.session, self.runtime).approve(
                credential, payout_id, integration, operator_id, trigger.comment
            )
        elif trigger.action == "reject":
            payout = await ApprovalService(self.session, self.runtime).reject(
                credential, payout_id, integration, operator_id, trigger.comment
            )
        else:
            payout = await PayoutService(self.session, self.runtime).cancel(
                credential, payout_id, integration, operator_id, trigger.comment
            )
        return InboundAnswer(202, {"payout_id": payout["id"], "status": payout["status"]})

    async def _request(
        self,
        connector: HelpdeskConnector,
        trigger: InboundTrigger,
        credential: Credential,
        operator_id: str,
    ) -> InboundAnswer:
        fields = {
            "ticket": {"system": connector.id, "id": trigger.ticket.id, "url": trigger.ticket.url},
            "reason": trigger.reason or "other",
            "amount": trigger.amount,
            "currency": trigger.currency,
            "recipient": trigger.recipient,
            "requested_by": operator_id,
            "description": trigger.description,
        }
        try:
            body = PayoutCreate.model_validate(fields)
        except ValidationError as exc:
            raise validation_failed(field_errors_from_pydantic(exc.errors())) from None
        key = f"connector:{connector.id}:{trigger.event_id}"
        created = await PayoutService(self.session, self.runtime).create(
            credential, connector.integration_id, key, body
        )
        if created.status_code >= 400:
            return InboundAnswer(created.status_code, created.body)
        return InboundAnswer(
            202, {"payout_id": created.body["id"], "status": created.body["status"]}
        )

    async def _ticket_payout(self, connector: HelpdeskConnector, trigger: InboundTrigger) -> str:
        """The payout acted on: the one named, which must be on this connector's ticket, or
        else the ticket's newest payout."""
        payouts = PayoutService(self.session, self.runtime)
        if trigger.payout_id is not None:
            payout = await payouts.get_json(trigger.payout_id, connector.integration_id)
            ticket = payout["ticket"]
            if ticket["system"] != connector.id or ticket["id"] != trigger.ticket.id:
                raise not_found("Payout", trigger.payout_id)
            return trigger.payout_id
        rows = await payouts.list_json(
            connector.integration_id,
            1,
            None,
            ticket_system=connector.id,
            ticket_id=trigger.ticket.id,
            status=None,
            requested_by=None,
            created_gte=None,
            created_lt=None,
        )
        if not rows:
            raise not_found("Payout of ticket", trigger.ticket.id)
        return str(rows[0]["id"])
