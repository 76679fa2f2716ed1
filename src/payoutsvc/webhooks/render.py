"""How a delivery target that is not a Standard Webhooks endpoint turns a delivery into its
HTTP request: a helpdesk connector (connectors/) writes a note on a ticket with its own
method, path, auth header and body.

The sender knows such targets only through this protocol: the connectors package, above
webhooks, hands its renderers to the sender (``workers.py``), so there is one delivery engine
(outbox, claim, retries, SSRF guard, log) for both kinds of target.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class RenderedRequest:
    method: str  # GET, POST or PUT
    url: str  # absolute; the sender checks it with the SSRF guard like any webhook URL
    headers: dict[str, str]
    body: bytes
    # A read-modify-write (a helpdesk whose API can only replace a list, like Freshdesk's
    # tags): this request only reads, and ``then`` builds the write from its 2xx answer's
    # body (ValueError if it cannot). The sender makes both in one attempt, through the
    # same guard; the attempt's result is the write's. A retry repeats the pair, which is
    # safe because the read is.
    then: Callable[[bytes], RenderedRequest] | None = None


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
