"""Imports every model module so ``Base.metadata`` is complete (Alembic, tests)."""

from payoutsvc.auth import models as auth_models
from payoutsvc.batches import models as batch_models
from payoutsvc.connectors import models as connector_models
from payoutsvc.db.base import Base
from payoutsvc.executor import models as executor_models
from payoutsvc.gateways import models as gateway_models
from payoutsvc.operators import models as operator_models
from payoutsvc.payouts import models as payout_models
from payoutsvc.policy import models as policy_models
from payoutsvc.reconciliation import models as reconciliation_models
from payoutsvc.review import models as review_models
from payoutsvc.webhooks import models as webhook_models

__all__ = [
    "Base",
    "auth_models",
    "batch_models",
    "connector_models",
    "executor_models",
    "gateway_models",
    "operator_models",
    "payout_models",
    "policy_models",
    "reconciliation_models",
    "review_models",
    "webhook_models",
]
