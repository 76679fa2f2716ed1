"""The executor's second step: take one claimed payout one step towards a result at its
gateway (no transaction open). Never raises for gateway trouble.

Every check made before the gateway is called lives in :meth:`Attempter._preflight` (the
adapter exists and has credentials, the recipient decrypts, the gateway's breaker lets
calls through); a payout that fails one waits, unpenalised, instead of failing.

A payout claimed straight from ``approved`` has never been sent, so it is submitted. Any
other (a retry, or a payout whose worker died mid-call) may or may not have reached the
gateway, so the gateway is asked first (status by key) and the transfer is submitted again,
with the same key, only if the gateway has none.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import structlog

from payoutsvc.db.base import utcnow
from payoutsvc.executor.breaker import BreakerConfig, CircuitBreaker
from payoutsvc.executor.claim import Job
from payoutsvc.gateways.base import (
    Gateway,
    GatewayError,
    NotDone,
    OutcomeUnknown,
    ProviderHold,
    Rejected,
    TransferRequest,
    TransferResult,
    TransferState,
)
from payoutsvc.gateways.providers import MissingCredential
from payoutsvc.gateways.registry import GatewayRegistry, UnknownGateway
from payoutsvc.metrics import GATEWAY_ATTEMPTS, GATEWAY_LATENCY
from payoutsvc.recipients.masking import mask_account
from payoutsvc.recipients.storage import unseal
from payoutsvc.runtime import Runtime
from payoutsvc.tracing import traced_call

log = structlog.get_logger(__name__)

# A payout that cannot be sent for a reason an operator must fix (unknown gateway name,
# undecryptable recipient) waits this long between tries instead of failing.
MISCONFIGURED_RETRY_SECONDS = 60.0


@dataclass(slots=True)
class Call:
    """One gateway call, as it will be stored in payout_attempts."""

    operation: str
    outcome: str
    request: dict[str, Any]
    started_at: datetime
    latency_ms: float
    gateway_status: str | None = None
    reference: str | None = None
    error: str | None = None


class Verdict(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRY = "retry"  # pending or unknown: check again per the retry schedule
    DEFERRED = "deferred"  # not attempted (breaker open, misconfiguration): wait, unpenalised
    REFUSED = "refused"  # never sent: no evidence it may be paid (needs_review)


# Verdicts that never reached the gateway: they do not count as attempts.
NOT_ATTEMPTED = frozenset({Verdict.DEFERRED, Verdict.REFUSED})


@dataclass(slots=True)
class Outcome:
    job: Job
    verdict: Verdict
    calls: list[Call] = field(default_factory=list)
    reference: str | None = None
    gateway_status: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    detail: str | None = None
    defer_seconds: float = 0.0
    details: Mapping[str, str] | None = None  # TransferResult.details, kept on the payout
    hold: ProviderHold | None = None  # TransferResult.hold: the provider's own pending
    offline: bool = False  # TransferResult.offline: paid by a person, never checked again


def _deferred(job: Job, seconds: float, detail: str) -> Outcome:
    return Outcome(job, Verdict.DEFERRED, defer_seconds=seconds, detail=detail)


class Attempter:
    def __init__(
        self,
        runtime: Runtime,
        gateways: GatewayRegistry,
        *,
        clock: Callable[[], datetime],
        call_timeout: float,
        breaker_config: BreakerConfig | None = None,
    ) -> None:
        self.runtime = runtime
        self.gateways = gateways
        self.clock = clock
        self.call_timeout = call_timeout
        self._breaker_config = breaker_config or BreakerConfig()
        self._breakers: dict[str, CircuitBreaker] = {}

    def breaker(self, gateway: str) -> CircuitBreaker:
        found = self._breakers.get(gateway)
        if found is None:
            found = self._breakers[gateway] = CircuitBreaker(
                gateway, self._breaker_config, clock=lambda: self.clock().timestamp()
            )
        return found

    def paused_gateways(self) -> list[str]:
        return [name for name, b in self._breakers.items() if b.paused()]

    async def execute(self, job: Job) -> Outcome:
        """Take the payout one step towards a result. Never raises for gateway trouble."""
        tracing = self.runtime.tracing
        if tracing is None:
            return await self._execute(job)
        with tracing.payout_span("payout.execute", job.id, gateway=job.gateway):
            # The events this step writes (processing, succeeded, ...) are its doing: their
            # webhook deliveries are traced as its children.
            tracing.remember_payout(job.id)
            return await self._execute(job)

    async def _execute(self, job: Job) -> Outcome:
        ready = self._preflight(job)
        if isinstance(ready, Outcome):
            return ready
        gateway, request = ready
        outcome = await self._attempt(gateway, job, request)
        return _without_account(outcome, str(request.recipient.get("account") or ""))

    def _preflight(self, job: Job) -> tuple[Gateway, TransferRequest] | Outcome:
        """Every check before the gateway is called: what to call it with, or why the payout
        waits (deferred, unpenalised) instead, or why it must never be paid (refused: its
        chain does not prove it approved, executor/evidence.py)."""
        if job.refusal is not None:
            return Outcome(job, Verdict.REFUSED, detail=job.refusal)
        try:
            gateway = self.gateways.get(job.gateway)
        except (UnknownGateway, MissingCredential) as exc:
            # Configuration, not the payout, is wrong: it waits (unpenalised) for a fix.
            log.error(  # noqa: TRY400  (a configuration fact, not a crash)
                "payout.execute.gateway_unavailable",
                payout_id=job.id,
                gateway=job.gateway,
                error=str(exc) if isinstance(exc, MissingCredential) else "no such adapter",
            )
            detail = f"gateway {job.gateway!r} is not configured"
            return _deferred(job, MISCONFIGURED_RETRY_SECONDS, detail)
        try:
            request = self._request(job)
        except Exception as exc:  # noqa: BLE001  (wrong key or corrupt blob: ops must act)
            log.error(  # noqa: TRY400  (no traceback: it could quote key material)
                "payout.execute.recipient_unreadable", payout_id=job.id, error=type(exc).__name__
            )
            return _deferred(job, MISCONFIGURED_RETRY_SECONDS, "recipient could not be decrypted")
        breaker = self.breaker(job.gateway)
        if not breaker.allow():
            wait = max(breaker.seconds_until_retry(), 0.5)
            return _deferred(job, wait, "gateway circuit breaker open")
        return gateway, request

    async def _attempt(self, gateway: Gateway, job: Job, request: TransferRequest) -> Outcome:
        """Ask (unless the payout was never sent), then submit under the payout's key only
        when the provider has no transfer under it, or documents a re-send as safe."""
        calls: list[Call] = []
        resend_of: TransferResult | None = None
        if not job.fresh:
            known = await self._call(
                gateway,
                job,
                calls,
                "status",
                {"idempotency_key": job.key},
                lambda: gateway.get_status(job.key, reference=job.payout["gateway_reference"]),
            )
            if not isinstance(known, TransferResult):
                # Even NotDone here only means the *query* was not answered.
                return _retry(job, calls, known)
            if known.state is TransferState.NOT_FOUND and _provider_knew_it(job):
                # The provider acknowledged this transfer before (we hold its reference, or
                # it held the transfer pending): "no such transfer" now means we asked the
                # wrong account, app or host, not that it was never booked. Never re-submit.
                return _retry(
                    job,
                    calls,
                    OutcomeUnknown(
                        "the gateway no longer finds a transfer it acknowledged before",
                        gateway_status=known.gateway_status or "not_found",
                    ),
                )
            if known.state is not TransferState.NOT_FOUND:
                if not _resend_now(job, known):
                    return _judge(job, calls, known)
                resend_of = known
        answer = await self._call(
            gateway, job, calls, "submit", request.summary(), lambda: gateway.submit(request)
        )
        if resend_of is not None and _refused(answer):
            # A re-send's refusal does not outweigh the status answer that just said the
            # transfer exists: only a later status query may fail the payout.
            return _judge(job, calls, resend_of)
        return _judge(job, calls, answer)

    def _request(self, job: Job) -> TransferRequest:
        payout = job.payout
        return TransferRequest(
            payout_id=job.id,
            idempotency_key=job.key,
            amount_minor=int(payout["amount_minor"]),
            currency=payout["currency"],
            recipient=unseal(self.runtime.cipher, payout["recipient_encrypted"], job.id),
            description=payout.get("description"),
        )

    async def _call(
        self,
        gateway: Gateway,
        job: Job,
        calls: list[Call],
        operation: str,
        summary: dict[str, Any],
        invoke: Callable[[], Any],
    ) -> TransferResult | GatewayError:
        started_at = utcnow()  # when the call really happened (self.clock schedules)
        started = time.perf_counter()
        answer: TransferResult | GatewayError
        try:
            async with asyncio.timeout(self.call_timeout):
                answer = await traced_call(
                    self.runtime.tracing, f"gateway.{operation}", invoke, gateway=job.gateway
                )
        except GatewayError as exc:
            answer = exc
        except TimeoutError:
            answer = OutcomeUnknown(
                f"no answer within {self.call_timeout:g}s", gateway_status="timeout"
            )
        except Exception as exc:  # an adapter bug must not lose the payout
            log.exception("payout.execute.adapter_error", payout_id=job.id, gateway=job.gateway)
            answer = OutcomeUnknown(f"adapter error: {type(exc).__name__}")
        elapsed = time.perf_counter() - started
        breaker = self.breaker(job.gateway)
        if isinstance(answer, NotDone | OutcomeUnknown):
            breaker.record_failure()
        else:
            breaker.record_success()
        outcome = _outcome_word(answer)
        calls.append(
            Call(
                operation=operation,
                outcome=outcome,
                request=summary,
                started_at=started_at,
                latency_ms=round(elapsed * 1000, 3),
                gateway_status=answer.gateway_status,
                reference=answer.reference if isinstance(answer, TransferResult) else None,
                error=None if isinstance(answer, TransferResult) else answer.message[:500],
            )
        )
        _attempts_counter(job.gateway, operation, outcome).inc()
        _latency_histogram(job.gateway, operation).observe(elapsed)
        return answer


def _judge(job: Job, calls: list[Call], answer: TransferResult | GatewayError) -> Outcome:
    if isinstance(answer, Rejected):
        return Outcome(
            job,
            Verdict.FAILED,
            calls,
            gateway_status=answer.gateway_status,
            failure_code=answer.code,
            failure_message=answer.message,
        )
    if not isinstance(answer, TransferResult):
        return _retry(job, calls, answer)
    if answer.state is TransferState.SUCCEEDED:
        return Outcome(
            job,
            Verdict.SUCCEEDED,
            calls,
            reference=answer.reference,
            gateway_status=answer.gateway_status,
            details=answer.details,
        )
    if answer.state is TransferState.FAILED:
        return Outcome(
            job,
            Verdict.FAILED,
            calls,
            reference=answer.reference,
            gateway_status=answer.gateway_status,
            failure_code=answer.failure_code or "gateway_declined",
            failure_message=answer.failure_message or "The gateway declined it.",
            details=answer.details,
        )
    # PENDING (or a NOT_FOUND answer to a submit, which no sane gateway gives): ask again.
    return Outcome(
        job,
        Verdict.RETRY,
        calls,
        reference=answer.reference,
        gateway_status=answer.gateway_status,
        detail=f"gateway reports {answer.gateway_status or answer.state.value}",
        details=answer.details,
        hold=answer.hold if answer.state is TransferState.PENDING else None,
        offline=answer.offline and answer.state is TransferState.PENDING,
    )


def _retry(job: Job, calls: list[Call], error: GatewayError) -> Outcome:
    return Outcome(
        job, Verdict.RETRY, calls, gateway_status=error.gateway_status, detail=error.message
    )


@functools.cache
def _attempts_counter(gateway: str, operation: str, outcome: str) -> Any:
    return GATEWAY_ATTEMPTS.labels(gateway, operation, outcome)


@functools.cache
def _latency_histogram(gateway: str, operation: str) -> Any:
    return GATEWAY_LATENCY.labels(gateway, operation)


def _provider_knew_it(job: Job) -> bool:
    return bool(job.payout["gateway_reference"]) or job.payout.get("gateway_hold_until") is not None


def _refused(answer: TransferResult | GatewayError) -> bool:
    if isinstance(answer, Rejected):
        return True
    return isinstance(answer, TransferResult) and answer.state is TransferState.FAILED


def _without_account(outcome: Outcome, account: str) -> Outcome:
    """Provider messages may quote the payee (a PayPal payer id, an Alipay open id, a phone):
    whatever an adapter let through, the full account never reaches a stored failure
    message, an attempt's error or the logs."""
    if len(account) < 4:
        return outcome
    masked = mask_account(account)

    def scrub(text: str | None) -> str | None:
        if text is None or account.lower() not in text.lower():
            return text
        return re.sub(re.escape(account), masked, text, flags=re.IGNORECASE)

    outcome.failure_message = scrub(outcome.failure_message)
    outcome.detail = scrub(outcome.detail)
    outcome.gateway_status = scrub(outcome.gateway_status)
    for call in outcome.calls:
        call.error = scrub(call.error)
        call.gateway_status = scrub(call.gateway_status)
    return outcome


def _resend_now(job: Job, known: TransferResult) -> bool:
    """Re-submit under the same key after a status query: only for a payout already on the
    slow schedule whose provider documents a re-send as what moves a stuck transfer on."""
    hold = known.hold
    return (
        known.state is TransferState.PENDING
        and hold is not None
        and hold.resend
        and job.payout.get("gateway_hold_until") is not None
    )


def _outcome_word(answer: TransferResult | GatewayError) -> str:
    if isinstance(answer, TransferResult):
        return answer.state.value
    if isinstance(answer, Rejected):
        return "rejected"
    if isinstance(answer, NotDone):
        return "not_done"
    return "unknown"
