"""The policy as the service uses it: versions in the database, decisions for payouts.

Services never commit; the request's transaction does.

Policy versions are immutable rows, so a parsed ``Policy`` may be cached forever under its
version. The cache lives on the process's Runtime (one per process and database) and never
decides which version is current: every decision reads the newest version number in the
same statement as its totals, so a PUT in any process applies to the next request in all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.config import Settings
from payoutsvc.db.base import utcnow
from payoutsvc.db.engine import Database
from payoutsvc.errors import (
    FieldError,
    PolicyVersionConflict,
    ServiceError,
    not_found,
    validation_failed,
)
from payoutsvc.messages import message
from payoutsvc.policy.document import (
    DEFAULT_POLICY_DOCUMENT,
    Policy,
    PolicyDocumentIn,
    load_policy_file,
    parse_policy_document,
)
from payoutsvc.policy.engine import policy_day_bounds
from payoutsvc.policy.repository import PolicyRepository
from payoutsvc.runtime import Runtime

log = structlog.get_logger(__name__)

INITIAL_POLICY_AUTHOR = "system"
_MAX_CACHED_VERSIONS = 64


class PolicyCache:
    __slots__ = ("by_version", "newest")

    def __init__(self) -> None:
        self.by_version: dict[int, Policy] = {}
        self.newest: Policy | None = None  # a guess only; always verified against the database

    def remember(self, policy: Policy) -> Policy:
        if len(self.by_version) >= _MAX_CACHED_VERSIONS:
            self.by_version.clear()
        self.by_version[policy.version] = policy
        if self.newest is None or policy.version > self.newest.version:
            self.newest = policy
        return policy


def initial_policy_document(settings: Settings) -> PolicyDocumentIn:
    """``PAYOUTSVC_POLICY_FILE`` when set (raises ``PolicyFileError``), else the built-in one."""
    if settings.policy_file is not None:
        return load_policy_file(settings.policy_file)
    return parse_policy_document(DEFAULT_POLICY_DOCUMENT)


def stored_document(doc: PolicyDocumentIn) -> dict[str, Any]:
    """The canonical JSON stored for a version (amounts re-rendered, no ``version`` key)."""
    document = Policy.from_document(doc, 1).to_document()
    del document["version"]
    return document


async def ensure_initial_policy(db: Database, settings: Settings) -> None:
    """Create policy version 1 unless a version exists (startup; safe across replicas)."""
    async with db.transaction(write=True) as session:
        await PolicyService(session, settings).ensure_initial()


@dataclass(frozen=True, slots=True)
class PayoutRequest:
    """The parts of a payout request the rules look at; amounts in minor units."""

    amount_minor: int
    currency: str
    reason: str
    requester_id: str
    ticket_system: str
    ticket_id: str
    recipient_fingerprint: str
    recipient_warnings: tuple[str, ...] = ()
    # How the requester was established and what the caller may be told (PayoutFacts).
    requester_verified: bool = True
    disclose_totals: bool = True
    disclose_requester: bool = True

    def limit_counters(self, day: int) -> list[tuple[str, str, int, str, int]]:
        """The limit counters this request adds to (policy/models.py LimitCounter), as
        (scope, subject, day, currency, amount) in key order, the order every writer locks
        them in: requester-day and ticket per currency, the recipient-day per currency and
        across currencies (its count cap spans currencies)."""
        ticket = f"{self.ticket_system}:{self.ticket_id}"
        fingerprint = self.recipient_fingerprint
        return sorted(
            [
                ("requester", self.requester_id, day, self.currency, self.amount_minor),
                ("ticket", ticket, 0, self.currency, self.amount_minor),
                ("recipient", fingerprint, day, self.currency, self.amount_minor),
                ("recipient", fingerprint, day, "*", 0),
            ]
        )


class PolicyService:
    def __init__(
        self, session: AsyncSession, settings: Settings, cache: PolicyCache | None = None
    ) -> None:
        self.session = session
        self.settings = settings
        self.repo = PolicyRepository(session)
        # Versions are immutable, so parsed ones are kept per process (on the Runtime).
        self._cache = cache if cache is not None else PolicyCache()

    @classmethod
    def of(cls, session: AsyncSession, runtime: Runtime) -> PolicyService:
        """The policy as this process sees it, with its cache of parsed versions."""
        return cls(session, runtime.settings, runtime.per_process(PolicyCache, PolicyCache))

    # -- versions -------------------------------------------------------------------------------
    async def ensure_initial(self) -> None:
        doc = initial_policy_document(self.settings)
        inserted = await self.repo.insert_version_if_absent(
            1, stored_document(doc), INITIAL_POLICY_AUTHOR, utcnow()
        )
        if inserted:
            source = str(self.settings.policy_file) if self.settings.policy_file else "built-in"
            log.info("policy.initial_created", version=1, source=source)

    async def current(self) -> Policy:
        newest = await self.repo.newest_version()
        if newest is None:
            # Only when startup could not create it (schema was behind then).
            await self.ensure_initial()
            newest = 1
        return await self.get(newest)

    async def get(self, version: int) -> Policy:
        cached = self._cache.by_version.get(version)
        if cached is not None:
            return cached
        row = await self.repo.get_version(version)
        if row is None:
            raise not_found("Policy version", str(version))
        return self._cache.remember(
            Policy.from_document(parse_policy_document(row.document), version)
        )

    async def replace(self, data: object, created_by: str) -> Policy:
        """PUT /v1/policy: validate ``data`` and store it as the next version.

        ``data`` may carry the ``version`` it was based on (as GET returns it); then the PUT
        only applies while that is still the current version (409 otherwise), so two admins
        editing at once cannot silently overwrite each other.
        """
        expected, version_errors = _pop_expected_version(data)
        try:
            doc = parse_policy_document(data)
        except ServiceError as exc:
            raise validation_failed(version_errors + exc.errors) from None
        if version_errors:
            raise validation_failed(version_errors)
        await self.repo.lock_policy_writes()
        await self.ensure_initial()
        current = await self.repo.newest_version() or 1
        if expected is not None and expected != current:
            raise PolicyVersionConflict(
                message("policy_version_conflict", expected=expected, current=current),
                errors=[
                    FieldError.of(
                        "version",
                        "policy_version_conflict",
                        message("policy_version_current", current=current),
                    )
                ],
                title="Policy changed meanwhile",
            )
        version = current + 1
        document = stored_document(doc)
        now = utcnow()
        await self.repo.insert_version(version, document, created_by, now)
        log.info("policy.version_created", version=version, created_by=created_by)
        policy = self._cache.remember(Policy.from_document(doc, version))
        if policy.timezone != (await self.get(current)).timezone:
            # Today's limit counters were kept per the old day; today now starts elsewhere.
            day_start, _ = policy_day_bounds(policy, now)
            await self.repo.move_policy_day(int(day_start.timestamp()), day_start)
        return policy

    async def newest_known(self) -> Policy:
        """The newest version this process has seen (a guess: a decision confirms it in the
        same statement as its totals, see PayoutService.decide), else the current one."""
        return self._cache.newest or await self.current()


def _pop_expected_version(data: object) -> tuple[int | None, list[FieldError]]:
    """Take the optional ``version`` out of a PUT body (mutates ``data``)."""
    if not isinstance(data, dict) or "version" not in data:
        return None, []
    version = data.pop("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        message = "version (optional) must be the positive integer GET /v1/policy returned."
        return None, [FieldError("version", "invalid_type", message)]
    return version, []
