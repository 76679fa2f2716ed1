"""Transactional outbox: webhook deliveries for payout events, written with the event."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

if TYPE_CHECKING:
    from payoutsvc.payouts.events import NewEvent


async def enqueue_deliveries(session: AsyncSession, events: list[NewEvent]) -> None:
    """Create one delivery row per (event, matching enabled endpoint of its integration).

    Webhook endpoints arrive with the webhooks issue; until then no endpoint exists to match.
    """
    del session, events
