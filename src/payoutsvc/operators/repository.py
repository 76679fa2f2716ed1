"""All SQL for operators."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from typing import cast

from sqlalchemy import Table, column, delete, insert, select, table, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.operators.models import Operator, OperatorHelpdeskUser

_users = cast(Table, OperatorHelpdeskUser.__table__)
# The helpdesk connectors (connectors/models.py HelpdeskConnector), named here rather than
# imported: the connectors domain uses operators, so operators must not import it.
_CONNECTORS = table("helpdesk_connectors", column("id"))


class OperatorRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, operator_id: str) -> Operator | None:
        return await self.session.get(Operator, operator_id)

    async def add(self, operator: Operator) -> None:
        self.session.add(operator)
        await self.session.flush()

    async def list(self, limit: int, after_id: str | None) -> Sequence[Operator]:
        query = select(Operator).order_by(Operator.id).limit(limit)
        if after_id:
            query = query.where(Operator.id > after_id)
        return (await self.session.execute(query)).scalars().all()

    # -- helpdesk users -----------------------------------------------------------------------
    async def helpdesk_users(
        self, operator_ids: Iterable[str]
    ) -> dict[str, builtins.list[tuple[str, str]]]:
        """``operator id -> [(connector_id, user_id)]`` for these operators, one query."""
        ids = sorted(set(operator_ids))
        found: dict[str, builtins.list[tuple[str, str]]] = {i: [] for i in ids}
        if not ids:
            return found
        result = await self.session.execute(
            select(_users.c.operator_id, _users.c.connector_id, _users.c.user_id)
            .where(_users.c.operator_id.in_(ids))
            .order_by(_users.c.connector_id, _users.c.user_id)
        )
        for operator_id, connector_id, user_id in result.all():
            found[operator_id].append((connector_id, user_id))
        return found

    async def owners_of(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Which operator each ``(connector_id, user_id)`` belongs to now."""
        if not pairs:
            return {}
        result = await self.session.execute(
            select(_users.c.connector_id, _users.c.user_id, _users.c.operator_id).where(
                tuple_(_users.c.connector_id, _users.c.user_id).in_(list(pairs))
            )
        )
        return {(c, u): o for c, u, o in result.all()}

    async def existing_connectors(self, connector_ids: Iterable[str]) -> set[str]:
        """Which of these helpdesk connector ids exist."""
        ids = sorted(set(connector_ids))
        if not ids:
            return set()
        result = await self.session.execute(
            select(_CONNECTORS.c.id).where(_CONNECTORS.c.id.in_(ids))
        )
        return set(result.scalars().all())

    async def replace_helpdesk_users(
        self, operator_id: str, pairs: Sequence[tuple[str, str]]
    ) -> None:
        await self.session.execute(delete(_users).where(_users.c.operator_id == operator_id))
        if pairs:
            await self.session.execute(
                insert(_users),
                [{"operator_id": operator_id, "connector_id": c, "user_id": u} for c, u in pairs],
            )

    async def operator_for_helpdesk_user(self, connector_id: str, user_id: str) -> str | None:
        result = await self.session.execute(
            select(_users.c.operator_id).where(
                _users.c.connector_id == connector_id, _users.c.user_id == user_id
            )
        )
        found: str | None = result.scalar_one_or_none()
        return found

    async def forget_connector(self, connector_id: str) -> None:
        await self.session.execute(delete(_users).where(_users.c.connector_id == connector_id))
