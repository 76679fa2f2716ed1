"""Operators are company-wide people who request and approve payouts; never commits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.db.base import utcnow
from payoutsvc.errors import (
    FieldError,
    OperatorDisabled,
    OperatorExists,
    UnknownOperator,
    ValidationFailed,
    not_found,
)
from payoutsvc.operators.models import Operator
from payoutsvc.operators.repository import OperatorRepository
from payoutsvc.operators.schemas import HelpdeskUser, OperatorCreate, OperatorUpdate


class OperatorService:
    def __init__(self, session: AsyncSession) -> None:
        self.repo = OperatorRepository(session)

    async def create(self, body: OperatorCreate) -> Operator:
        if await self.repo.get(body.id) is not None:
            raise OperatorExists(
                f"An operator with id {body.id!r} exists already; PATCH it instead.",
                title="Operator already exists",
            )
        now = utcnow()
        operator = Operator(
            id=body.id,
            role=body.role,
            display_name=body.display_name,
            disabled=False,
            created_at=now,
            updated_at=now,
        )
        await self.repo.add(operator)
        if body.helpdesk_users:
            await self.set_helpdesk_users(operator.id, body.helpdesk_users)
        return operator

    async def set_helpdesk_users(self, operator_id: str, users: list[HelpdeskUser]) -> None:
        """Replace the operator's helpdesk users; one naming a connector that does not exist,
        or taken by another operator, is refused and nothing changes."""
        existing = await self.repo.existing_connectors(u.connector_id for u in users)
        unknown = [
            FieldError(
                f"helpdesk_users[{index}].connector_id",
                "unknown_connector",
                f"There is no helpdesk connector {user.connector_id!r}.",
            )
            for index, user in enumerate(users)
            if user.connector_id not in existing
        ]
        if unknown:
            raise ValidationFailed(
                "A helpdesk user must name an existing connector.", errors=unknown
            )
        pairs = sorted({(u.connector_id, u.user_id) for u in users})
        owners = await self.repo.owners_of(pairs)
        taken = [
            FieldError(
                f"helpdesk_users[{index}]",
                "helpdesk_user_taken",
                f"{user.user_id!r} of {user.connector_id} is already operator {owner!r}.",
            )
            for index, user in enumerate(users)
            if (owner := owners.get((user.connector_id, user.user_id), operator_id)) != operator_id
        ]
        if taken:
            raise ValidationFailed("A helpdesk user maps to one operator only.", errors=taken)
        await self.repo.replace_helpdesk_users(operator_id, pairs)

    async def helpdesk_users(self, operator_ids: list[str]) -> dict[str, list[tuple[str, str]]]:
        return await self.repo.helpdesk_users(operator_ids)

    async def operator_for_helpdesk_user(self, connector_id: str, user_id: str) -> str | None:
        return await self.repo.operator_for_helpdesk_user(connector_id, user_id)

    async def forget_connector(self, connector_id: str) -> None:
        await self.repo.forget_connector(connector_id)

    async def get(self, operator_id: str) -> Operator:
        operator = await self.repo.get(operator_id)
        if operator is None:
            raise not_found("Operator", operator_id)
        return operator

    async def list(self, limit: int, after_id: str | None) -> Sequence[Operator]:
        return await self.repo.list(limit, after_id)

    async def update(self, operator_id: str, body: OperatorUpdate) -> Operator:
        operator = await self.get(operator_id)
        changes = body.model_dump(exclude_unset=True)
        for field in ("role", "disabled"):
            if field in changes and changes[field] is None:
                raise ValidationFailed(
                    f"{field} cannot be null",
                    errors=[FieldError(field, "null_not_allowed", f"{field} cannot be null.")],
                )
        users = changes.pop("helpdesk_users", None)
        if users is not None:
            await self.set_helpdesk_users(operator_id, body.helpdesk_users or [])
        for field, value in changes.items():
            setattr(operator, field, value)
        operator.updated_at = utcnow()
        return operator

    async def disable(self, operator_id: str) -> Operator:
        """Operators are referenced by payouts and events forever, so DELETE disables."""
        operator = await self.get(operator_id)
        operator.disabled = True
        operator.updated_at = utcnow()
        return operator

    async def require_active(
        self, operator_id: str, field: str = "operator_id", *, discreet: bool = False
    ) -> Operator:
        """The operator acting on a payout: unknown or disabled ones are refused. ``discreet``
        (a non-admin key naming someone it does not prove): one answer for both, so the
        caller learns nothing about which operators exist."""
        operator = await self.repo.get(operator_id)
        if discreet and (operator is None or operator.disabled):
            raise UnknownOperator(
                f"{operator_id!r} is not an active operator.",
                errors=[FieldError(field, "unknown_operator", "Not an active operator.")],
            )
        if operator is None:
            raise UnknownOperator(
                f"No operator {operator_id!r}; create it with POST /v1/operators.",
                errors=[FieldError(field, "unknown_operator", f"No operator {operator_id!r}.")],
            )
        if operator.disabled:
            raise OperatorDisabled(
                f"Operator {operator_id!r} is disabled and can do nothing.",
                errors=[
                    FieldError(field, "operator_disabled", f"Operator {operator_id!r} is disabled.")
                ],
            )
        return operator
