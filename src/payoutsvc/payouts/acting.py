"""Who acts: the operator a request names, checked against the API key that sent it.

A key is either bound to one operator (it proves that person) or an integration key (it
proves only the helpdesk). Every decision on a payout — approve, reject, resolve, and release
and record-payment when they exist — asks :func:`deciding_operator`; creating and canceling
ask :func:`named_operator`. The attack these close: one integration key with write + approve
scopes requesting as a supervisor (to be auto-approved on the supervisor's limit), then
approving as whoever it likes, twice for a dual approval. Nothing here reads the database,
so a refusal never depends on (and never reveals) which operators exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from payoutsvc.auth.dependencies import Caller
from payoutsvc.errors import FieldError, OperatorKeyRequired, OperatorMismatch, validation_failed
from payoutsvc.policy.document import Policy


@dataclass(frozen=True, slots=True)
class Credential:
    """What the calling key proves: the operator it is bound to, and back-office rights."""

    bound_operator: str | None
    admin: bool

    @classmethod
    def of(cls, caller: Caller) -> Credential:
        return cls(caller.operator_id, caller.is_admin)


@dataclass(frozen=True, slots=True)
class Acting:
    """The operator a request acts as; ``verified`` when the key is bound to them."""

    operator_id: str
    verified: bool

    def discreet_for(self, credential: Credential) -> bool:
        """Whether answers must not describe this operator (whether they exist, their role,
        their limits) to the caller: a non-admin key naming someone it does not prove."""
        return not (credential.admin or self.verified)


def named_operator(credential: Credential, named: str | None, field: str) -> Acting:
    """The operator of a request that is not an approver's decision (create, cancel): a
    bound key acts as its operator (``named`` may be omitted; anyone else is 403
    ``operator_mismatch``); an integration key must name one, unverified."""
    if credential.bound_operator is not None:
        if named is not None and named != credential.bound_operator:
            raise _mismatch(field)
        return Acting(credential.bound_operator, verified=True)
    if named is None:
        raise validation_failed(
            [FieldError(field, "required", f"{field} is required unless the key is bound.")]
        )
    return Acting(named, verified=False)


def deciding_operator(credential: Credential, named: str | None, policy: Policy) -> Acting:
    """The operator taking a decision (approve, reject, resolve, release, record-payment).

    With the policy's ``approvals.require_operator_key`` (the default) only a key bound to
    that operator may take it: an integration key, admin keys included, gets 403
    ``operator_key_required`` whatever it names, because a back-office key proves no person
    either and four eyes need two people. With ``false`` the helpdesk vouches for its agents.
    """
    if credential.bound_operator is None and policy.require_operator_key:
        raise OperatorKeyRequired(
            "This decision needs an API key bound to the operator who takes it (the policy's "
            "approvals.require_operator_key); ask an admin for one: POST "
            "/v1/integrations/{id}/api-keys with operator_id."
        )
    return named_operator(credential, named, "operator_id")


def _mismatch(field: str) -> OperatorMismatch:
    # Says nothing about the operator named: it may not even exist.
    return OperatorMismatch(
        "This API key acts only as the operator it is bound to; omit "
        f"{field} or name that operator.",
        errors=[FieldError(field, "operator_mismatch", "Not the key's operator.")],
    )
