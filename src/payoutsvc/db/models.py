"""Imports every model module so ``Base.metadata`` is complete (Alembic, tests)."""

from payoutsvc.auth import models as auth_models
from payoutsvc.db.base import Base
from payoutsvc.operators import models as operator_models
from payoutsvc.payouts import models as payout_models
from payoutsvc.policy import models as policy_models

__all__ = ["Base", "auth_models", "operator_models", "payout_models", "policy_models"]
