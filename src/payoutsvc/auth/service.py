"""Integrations and API keys; never commits (the caller's transaction does)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.auth.keys import SCOPES, generate_secret, hash_secret, secret_hint
from payoutsvc.auth.models import ApiKey, Integration
from payoutsvc.auth.repository import AuthRepository
from payoutsvc.db.base import utcnow
from payoutsvc.errors import (
    FieldError,
    IntegrationExists,
    OperatorDisabled,
    UnknownOperator,
    not_found,
)
from payoutsvc.ids import new_id

DEFAULT_INTEGRATION = "default"


class AuthService:
    def __init__(self, session: AsyncSession) -> None:
        self.repo = AuthRepository(session)

    async def create_integration(self, name: str) -> Integration:
        if await self.repo.get_integration_by_name(name) is not None:
            raise IntegrationExists(
                f"An integration named {name!r} exists already.", title="Integration already exists"
            )
        integration = Integration(id=new_id("int"), name=name, created_at=utcnow())
        await self.repo.add_integration(integration)
        return integration

    async def get_integration(self, integration_id: str) -> Integration:
        integration = await self.repo.get_integration(integration_id)
        if integration is None:
            raise not_found("Integration", integration_id)
        return integration

    async def list_integrations(
        self, limit: int, before_id: str | None, only_id: str | None
    ) -> Sequence[Integration]:
        return await self.repo.list_integrations(limit, before_id, only_id)

    async def create_key(
        self,
        integration_id: str,
        scopes: Sequence[str],
        secret: str | None = None,
        operator_id: str | None = None,
    ) -> tuple[ApiKey, str]:
        """Create a key, bound to ``operator_id`` when given; returns it with its secret,
        which is never retrievable again."""
        await self.get_integration(integration_id)
        if operator_id is not None:
            await self._require_bindable(operator_id)
        secret = secret or generate_secret()
        ordered = [s for s in SCOPES if s in set(scopes)]
        key = ApiKey(
            id=new_id("key"),
            integration_id=integration_id,
            secret_hash=hash_secret(secret),
            secret_hint=secret_hint(secret),
            scopes=ordered,
            operator_id=operator_id,
            created_at=utcnow(),
            revoked_at=None,
        )
        await self.repo.add_key(key)
        return key, secret

    async def _require_bindable(self, operator_id: str) -> None:
        # Only admins create keys, so naming what is wrong tells nobody anything new.
        disabled = await self.repo.operator_state(operator_id)
        if disabled is None:
            raise UnknownOperator(
                f"No operator {operator_id!r}; create it with POST /v1/operators first.",
                errors=[FieldError("operator_id", "unknown_operator", "No such operator.")],
            )
        if disabled:
            raise OperatorDisabled(
                f"Operator {operator_id!r} is disabled; a key bound to it could do nothing.",
                errors=[FieldError("operator_id", "operator_disabled", "Operator is disabled.")],
            )

    async def list_keys(self, integration_id: str) -> Sequence[ApiKey]:
        await self.get_integration(integration_id)
        return await self.repo.list_keys(integration_id)

    async def revoke_key(self, integration_id: str, key_id: str) -> ApiKey:
        key = await self.repo.revoke_key(integration_id, key_id, utcnow())
        if key is None:
            raise not_found("API key", key_id)
        return key

    async def ensure_default_integration(self) -> tuple[Integration, bool]:
        existing = await self.repo.get_integration_by_name(DEFAULT_INTEGRATION)
        if existing is not None:
            return existing, False
        return await self.create_integration(DEFAULT_INTEGRATION), True

    async def ensure_bootstrap_key(self, secret: str) -> bool:
        """PAYOUTSVC_BOOTSTRAP_API_KEY: make sure an all-scopes key with this value exists.

        A revoked bootstrap key stays revoked: whoever revoked it did so because the value
        leaked, and the next start must not bring it back. Returns False in that case.
        """
        integration, _ = await self.ensure_default_integration()
        existing = await self.repo.get_key_by_hash(hash_secret(secret))
        if existing is None:
            await self.create_key(integration.id, SCOPES, secret=secret)
        elif existing.revoked_at is not None:
            return False
        elif set(existing.scopes) != set(SCOPES):
            existing.scopes = list(SCOPES)
        return True

    async def is_empty(self) -> bool:
        return await self.repo.count_integrations() == 0
