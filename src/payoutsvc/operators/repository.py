"""All SQL for operators."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.operators.models import Operator


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
