"""All SQL for the policy: its versions (the facts a payout decision reads from the payouts
table are the payouts domain's: payouts/limits.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.db.locks import advisory_lock_id
from payoutsvc.policy.models import PolicyVersion

# One key for "who writes the next policy version" (PostgreSQL advisory lock).
_POLICY_WRITE_LOCK = ("policy_versions",)


class PolicyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def is_postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    async def lock_policy_writes(self) -> None:
        """Serialise PUT /v1/policy across processes so version numbers never collide."""
        if self.is_postgres:
            await self.session.execute(
                text("SELECT pg_advisory_xact_lock(:k)"),
                {"k": advisory_lock_id(*_POLICY_WRITE_LOCK)},
            )

    # -- versions -------------------------------------------------------------------------------
    async def newest_version(self) -> int | None:
        result = await self.session.execute(select(func.max(PolicyVersion.version)))
        value = result.scalar_one_or_none()
        return None if value is None else int(value)

    async def get_version(self, version: int) -> PolicyVersion | None:
        result = await self.session.execute(
            select(PolicyVersion).where(PolicyVersion.version == version)
        )
        return result.scalar_one_or_none()

    async def insert_version(
        self, version: int, document: dict[str, Any], created_by: str, at: datetime
    ) -> None:
        await self.session.execute(
            insert(PolicyVersion).values(
                version=version, document=document, created_by=created_by, created_at=at
            )
        )

    async def insert_version_if_absent(
        self, version: int, document: dict[str, Any], created_by: str, at: datetime
    ) -> bool:
        """INSERT … ON CONFLICT DO NOTHING: several replicas may create version 1 at once and
        exactly one row survives. Returns whether this call inserted it."""
        dialect_insert = postgresql.insert if self.is_postgres else sqlite.insert
        statement = (
            dialect_insert(PolicyVersion)
            .values(version=version, document=document, created_by=created_by, created_at=at)
            .on_conflict_do_nothing(index_elements=[PolicyVersion.version])
            .returning(PolicyVersion.version)
        )
        result = await self.session.execute(statement)
        return result.first() is not None
