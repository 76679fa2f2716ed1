"""The helpdesk kinds, one module each, and their write-back renderers for the sender."""

from __future__ import annotations

from payoutsvc.connectors.kinds.base import HelpdeskKind
from payoutsvc.connectors.kinds.freshdesk import FRESHDESK
from payoutsvc.connectors.kinds.jira_service_management import JIRA_SERVICE_MANAGEMENT
from payoutsvc.connectors.kinds.zendesk import ZENDESK
from payoutsvc.webhooks.render import Renderers

KINDS: dict[str, HelpdeskKind] = {
    kind.kind: kind for kind in (ZENDESK, JIRA_SERVICE_MANAGEMENT, FRESHDESK)
}
RENDERERS: Renderers = {name: kind.renderer() for name, kind in KINDS.items()}

__all__ = ["KINDS", "RENDERERS", "HelpdeskKind"]
