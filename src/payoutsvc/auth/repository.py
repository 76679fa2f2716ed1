"""All SQL for integrations and API keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.auth.models import ApiKey, Integration
from payoutsvc.operators.models import Operator


class AuthRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def find_active_key(self, secret_hash: str) -> ApiKey | None:
        result = await self.session.execute(
            select(ApiKey).where(ApiKey.secret_hash == secret_hash, ApiKey.revoked_at.is_(None))
        )
        return result.scalar_one_or_none()

    async def operator_state(self, operator_id: str) -> bool | None:
        """Whether the operator is disabled; None when there is no such operator."""
        result = await self.session.execute(
            select(Operator.disabled).where(Operator.id == operator_id)
        )
        return result.scalar_one_or_none()

    async def get_integration(self, integration_id: str) -> Integration | None:
        return await self.session.get(Integration, integration_id)

    async def get_integration_by_name(self, name: str) -> Integration | None:
        result = await self.session.execute(select(Integration).where(Integration.name == name))
        return result.scalar_one_or_none()

    async def list_integrations(
        self, limit: int, before_id: str | None, only_id: str | None
    ) -> Sequence[Integration]:
        query = select(Integration).order_by(Integration.id.desc()).limit(limit)
        if before_id:
            query = query.where(Integration.id < before_id)
        if only_id:
            query = query.where(Integration.id == only_id)
        return (await self.session.execute(query)).scalars().all()

    async def add_integration(self, integration: Integration) -> None:
        self.session.add(integration)
        await self.session.flush()

    async def add_key(self, key: ApiKey) -> None:
        self.session.add(key)
        await self.session.flush()

    async def get_key_by_hash(self, secret_hash: str) -> ApiKey | None:
        result = await self.session.execute(select(ApiKey).where(ApiKey.secret_hash == secret_hash))
        return result.scalar_one_or_none()

    async def list_keys(self, integration_id: str) -> Sequence[ApiKey]:
        result = await self.session.execute(
            select(ApiKey).where(ApiKey.integration_id == integration_id).order_by(ApiKey.id.desc())
        )
        return result.scalars().all()

    async def revoke_key(self, integration_id: str, key_id: str, at: datetime) -> ApiKey | None:
        result = await self.session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.integration_id == integration_id)
            .values(revoked_at=at)
            .returning(ApiKey)
            .execution_options(synchronize_session=False)
        )
        return result.scalar_one_or_none()

    async def count_integrations(self) -> int:
        result = await self.session.execute(select(Integration.id).limit(1))
        return len(result.all())
