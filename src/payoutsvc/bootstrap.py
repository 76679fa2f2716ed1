"""First-start set-up: the default integration and an admin key for a newcomer."""

from __future__ import annotations

import sys

import structlog
from sqlalchemy.exc import IntegrityError

from payoutsvc.auth.keys import SCOPES
from payoutsvc.auth.service import AuthService
from payoutsvc.config import Settings
from payoutsvc.db.engine import Database

log = structlog.get_logger(__name__)


async def bootstrap(db: Database, settings: Settings) -> None:
    """Make sure the configured bootstrap key exists; on the embedded default with an empty
    database, also create the ``default`` integration and print one admin key."""
    for attempt in range(3):
        try:
            async with db.transaction() as session:
                service = AuthService(session)
                first_start = await service.is_empty()
                if settings.bootstrap_api_key is not None:
                    usable = await service.ensure_bootstrap_key(
                        settings.bootstrap_api_key.get_secret_value()
                    )
                    if not usable:
                        log.warning(
                            "bootstrap.key_revoked",
                            hint="PAYOUTSVC_BOOTSTRAP_API_KEY was revoked and stays so; "
                            "set a new value or unset it",
                        )
                elif first_start and settings.uses_embedded_default:
                    integration, _ = await service.ensure_default_integration()
                    _key, secret = await service.create_key(integration.id, SCOPES)
                    _announce_key(secret)
        except IntegrityError:
            # Another replica bootstrapped at the same moment; look again.
            log.info("bootstrap.retry", attempt=attempt)
        else:
            return
    raise RuntimeError("bootstrap kept racing with another process")


def _announce_key(secret: str) -> None:
    banner = (
        "\n"
        "  ┌──────────────────────────────────────────────────────────────────────────┐\n"
        "  │ First start: created integration 'default' and this admin API key.      │\n"
        "  │ It is shown once; only its hash is stored.                              │\n"
        "  └──────────────────────────────────────────────────────────────────────────┘\n"
        f"    export PAYOUTSVC_API_KEY={secret}\n"
        '    curl -H "Authorization: Bearer $PAYOUTSVC_API_KEY" http://127.0.0.1:8000/v1/operators\n'
        "  Lost it? Run: payoutsvc create-api-key --scopes admin\n"
    )
    print(banner, file=sys.stderr, flush=True)
