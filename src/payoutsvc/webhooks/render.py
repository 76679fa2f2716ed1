"""How a delivery target that is not a Standard Webhooks endpoint turns a delivery into its
HTTP request: a helpdesk connector (connectors/) writes a note on a ticket with its own
method, path, auth header and body.

The sender knows such targets only through this protocol: the connectors package, above
webhooks, hands its renderers to the sender (``workers.py``), so there is one delivery engine
(outbox, claim, retries, SSRF guard, log) for both kinds of target.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class RenderedRequest:
    method: str  # GET, POST or PUT
    url: str  # absolute; the sender checks it with the SSRF guard like any webhook URL
    headers: dict[str, str]
    body: bytes


class TargetRenderer(Protocol):
    def __call__(
        self,
        base_url: str,
        credentials: Mapping[str, str],
        options: Mapping[str, Any],
        delivery_body: bytes,
    ) -> RenderedRequest:
        """The request for one delivery; raises ValueError for a body it cannot render."""
        ...


# target_kind -> renderer
Renderers = Mapping[str, TargetRenderer]
