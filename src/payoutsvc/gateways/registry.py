"""Which adapter pays which payout.

A payout's gateway is chosen when it is created (``Settings.gateway_for(recipient type)``,
every type defaults to ``sandbox``) and stored on the row; the executor always pays through
that stored name, because the idempotency key only means something to the provider that
first saw it. Adapters are registered by name with a factory and built on first use, once
per process (:func:`registry_for`).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Mapping

from payoutsvc.config import Settings
from payoutsvc.gateways.base import Gateway
from payoutsvc.gateways.manual import NAME as MANUAL
from payoutsvc.gateways.manual import ManualGateway
from payoutsvc.gateways.providers import MissingCredential
from payoutsvc.gateways.sandbox import NAME as SANDBOX
from payoutsvc.gateways.sandbox import SandboxGateway
from payoutsvc.runtime import Runtime

GatewayFactory = Callable[[Runtime], Gateway]
FAILED_BUILD_RETRY_SECONDS = 30.0  # a fixed key file is picked up within this


def _sandbox(runtime: Runtime) -> Gateway:
    return SandboxGateway(runtime.db, latency_ms=runtime.settings.sandbox_latency_ms)


def _provider(module: str) -> GatewayFactory:
    """A provider adapter, imported only when a route names it (each module exposes
    ``create_gateway(runtime)``, which reads its credentials from the environment)."""

    def build(runtime: Runtime) -> Gateway:
        try:
            created: Gateway = importlib.import_module(module).create_gateway(runtime)
        except (ValueError, OSError, TypeError) as exc:
            # A malformed key, an unreadable key file, an invalid setting: the payouts wait
            # as for a missing credential. Only the error's type is echoed (its text could
            # quote a setting's value).
            raise MissingCredential(
                f"the {module.rsplit('.', 1)[1]} adapter could not be configured "
                f"({type(exc).__name__}); check its PAYOUTSVC_* settings and key files"
            ) from exc
        return created

    return build


_FACTORIES: dict[str, GatewayFactory] = {
    SANDBOX: _sandbox,
    MANUAL: lambda _runtime: ManualGateway(),
    "wechatpay": _provider("payoutsvc.gateways.wechatpay"),
    "alipay": _provider("payoutsvc.gateways.alipay"),
    "stripe": _provider("payoutsvc.gateways.stripe"),
    "paypal": _provider("payoutsvc.gateways.paypal"),
}


class UnknownGateway(LookupError):
    """A payout names a gateway this process has no adapter for (a configuration error)."""


def configured_gateways(settings: Settings) -> frozenset[str]:
    """The gateways the configuration routes any recipient type to."""
    routed = {
        part.split("=", 1)[1].strip() for part in settings.gateway_routes.split(",") if part.strip()
    }
    return frozenset({settings.gateway.strip(), *routed})


class GatewayRegistry:
    def __init__(
        self,
        runtime: Runtime,
        *,
        factories: Mapping[str, GatewayFactory] | None = None,
        instances: Mapping[str, Gateway] | None = None,
    ) -> None:
        self._runtime = runtime
        self._factories = dict(_FACTORIES if factories is None else factories)
        self._instances: dict[str, Gateway] = dict(instances or {})
        # A misconfigured adapter is not rebuilt (key files read, keys parsed) for every
        # payout and callback that needs it: its failure is answered for a while.
        self._failed: dict[str, tuple[float, MissingCredential]] = {}

    @property
    def settings(self) -> Settings:
        return self._runtime.settings

    def get(self, name: str) -> Gateway:
        gateway = self._instances.get(name)
        if gateway is None:
            factory = self._factories.get(name)
            if factory is None:
                raise UnknownGateway(name)
            failed = self._failed.get(name)
            if failed is not None and time.monotonic() < failed[0]:
                raise failed[1]
            try:
                gateway = self._instances[name] = factory(self._runtime)
            except MissingCredential as exc:
                self._failed[name] = (time.monotonic() + FAILED_BUILD_RETRY_SECONDS, exc)
                raise
        return gateway

    def for_recipient_type(self, recipient_type: str) -> Gateway:
        return self.get(self.settings.gateway_for(recipient_type))

    def is_configured(self, name: str) -> bool:
        return name in configured_gateways(self.settings) and (
            name in self._instances or name in self._factories
        )

    async def aclose(self) -> None:
        for gateway in self._instances.values():
            await gateway.aclose()
        self._instances.clear()


def registry_for(runtime: Runtime) -> GatewayRegistry:
    """The process's registry for this runtime, shared by the executor and the callback
    endpoint (so there is one sandbox booking writer per process)."""
    return runtime.per_process(GatewayRegistry, lambda: GatewayRegistry(runtime))
