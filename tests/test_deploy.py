"""`deploy/`: Docker and Kubernetes cannot run here, so what a `docker compose up` or a
`helm install` would trip over is checked by reading the files: compose keys from the
compose specification, images, commands and settings that this codebase accepts, a start
order that ends with migrated API replicas and workers; the chart rendered with its values
(tests/helm_render.py) into the objects and probes an operator expects."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.main import get_command

from payoutsvc.cli import app as cli_app
from payoutsvc.config import Settings
from payoutsvc.crypto import load_cipher
from tests.helm_render import Chart, TemplateError, parse

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"
CHART = ROOT / "deploy" / "helm" / "payoutsvc"

# From the Compose Specification (compose-spec/compose-spec, schema/compose-spec.json).
COMPOSE_TOP_LEVEL = {
    "version",
    "name",
    "include",
    "services",
    "networks",
    "volumes",
    "secrets",
    "configs",
}
COMPOSE_SERVICE_KEYS = {
    "annotations", "attach", "build", "blkio_config", "cap_add", "cap_drop", "cgroup",
    "cgroup_parent", "command", "configs", "container_name", "cpu_count", "cpu_percent",
    "cpu_shares", "cpu_quota", "cpu_period", "cpu_rt_period", "cpu_rt_runtime", "cpus",
    "cpuset", "credential_spec", "depends_on", "deploy", "develop", "device_cgroup_rules",
    "devices", "dns", "dns_opt", "dns_search", "domainname", "entrypoint", "env_file",
    "environment", "expose", "extends", "external_links", "extra_hosts", "gpus", "group_add",
    "healthcheck", "hostname", "image", "init", "ipc", "isolation", "labels", "links",
    "logging", "mac_address", "mem_limit", "mem_reservation", "mem_swappiness", "memswap_limit",
    "network_mode", "networks", "oom_kill_disable", "oom_score_adj", "pid", "pids_limit",
    "platform", "ports", "post_start", "pre_stop", "privileged", "profiles", "pull_policy",
    "read_only", "restart", "runtime", "scale", "security_opt", "shm_size", "secrets",
    "sysctls", "stdin_open", "stop_grace_period", "stop_signal", "storage_opt", "tmpfs",
    "tty", "ulimits", "user", "userns_mode", "uts", "volumes", "volumes_from", "working_dir",
}  # fmt: skip
DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def cli_commands() -> set[str]:
    return set(get_command(cli_app).commands)  # type: ignore[attr-defined]


def interpolate(value: str) -> str:
    """What compose substitutes with nothing set in the shell: each ${VAR:-default}."""
    return INTERPOLATION.sub(lambda m: m.group(2) or "", value)


def known_env(name: str) -> bool:
    if name == "FORWARDED_ALLOW_IPS":  # read by uvicorn itself
        return True
    prefix = "PAYOUTSVC_"
    return name.startswith(prefix) and name[len(prefix) :].lower() in Settings.model_fields


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text()))


def ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the repository's image."""
    return {n: s for n, s in compose["services"].items() if "build" in s}


def settings_from(env: dict[str, str]) -> Settings:
    prefix = "PAYOUTSVC_"
    return Settings(**{k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix)})


def env_of(service: dict[str, Any]) -> dict[str, str]:
    return {k: interpolate(str(v)) for k, v in service.get("environment", {}).items()}


def test_compose_uses_only_keys_of_the_compose_specification(compose: dict[str, Any]) -> None:
    assert set(compose) - {k for k in compose if k.startswith("x-")} <= COMPOSE_TOP_LEVEL
    for name, service in compose["services"].items():
        assert set(service) <= COMPOSE_SERVICE_KEYS, (name, set(service) - COMPOSE_SERVICE_KEYS)
        assert "image" in service or "build" in service, name
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.startswith((".", "/")) or source in declared, (name, source)
        for config in service.get("configs", []):
            assert config["source"] in compose["configs"], name


def test_compose_runs_the_repository_image_with_commands_and_settings_it_accepts(
    compose: dict[str, Any],
) -> None:
    services = ours(compose)
    roles = {name: s["command"][0] for name, s in services.items()}
    assert sorted(roles.values()) == ["migrate", "serve", "serve", "worker", "worker"]
    assert set(roles.values()) <= cli_commands()
    for name, service in services.items():
        assert (COMPOSE_FILE.parent / service["build"]["context"] / "Dockerfile").is_file(), name
        assert service["image"] == services["migrate"]["image"], name
        env = env_of(service)
        assert all(known_env(k) for k in env), (name, [k for k in env if not known_env(k)])
        settings = settings_from(env)
        # Production refuses to start without a real key, or with a weak bootstrap key.
        assert settings.environment == "production"
        load_cipher(settings)
        assert not settings.is_sqlite, name
        assert settings.run_worker is (roles[name] != "serve"), name
    # One database and one encryption key for every process.
    envs = [env_of(s) for s in services.values()]
    shared = {(e["PAYOUTSVC_DATABASE_URL"], e["PAYOUTSVC_ENCRYPTION_KEY"]) for e in envs}
    assert len(shared) == 1, shared


def test_compose_points_every_process_at_services_it_defines(compose: dict[str, Any]) -> None:
    for name, service in ours(compose).items():
        env = env_of(service)
        for variable in ("PAYOUTSVC_DATABASE_URL", "PAYOUTSVC_RATE_LIMIT_STORAGE"):
            host = re.match(r"\w[\w+]*://(?:[^@/]*@)?([\w.-]+)", env[variable])
            assert host is not None, (name, variable)
            assert host.group(1) in compose["services"], (name, variable, host.group(1))
    proxy_conf = compose["configs"]["nginx"]["content"]
    apis = sorted(n for n, s in ours(compose).items() if s["command"][0] == "serve")
    assert sorted(re.findall(r"server (\S+):8000", proxy_conf)) == [f"{a}" for a in apis]
    published = {n for n, s in compose["services"].items() if s.get("ports")}
    assert published == {"proxy"}


def test_compose_starts_in_order_migrate_first_then_api_and_workers(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            assert rule["condition"] in DEPENDS_CONDITIONS, (name, dependency)
            if rule["condition"] == "service_healthy":
                # its own healthcheck, or the image's HEALTHCHECK (Dockerfile) left enabled
                check = services[dependency].get("healthcheck", {})
                built = "build" in services[dependency]
                assert check.get("test") or (built and not check.get("disable")), dependency
    migrate = services["migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, service in ours(compose).items():
        if name != "migrate":
            assert service["depends_on"]["migrate"] == {
                "condition": "service_completed_successfully"
            }, name
    assert "HEALTHCHECK" in (ROOT / "Dockerfile").read_text()


def test_the_image_can_trace_when_the_deployment_asks_it_to(compose: dict[str, Any]) -> None:
    """Compose and the chart pass PAYOUTSVC_OTEL_EXPORTER_OTLP_ENDPOINT through: the image
    must carry the `otel` extra, or setting it would stop every process at startup."""
    assert all(
        "PAYOUTSVC_OTEL_EXPORTER_OTLP_ENDPOINT" in s["environment"] for s in ours(compose).values()
    )
    installs = [
        line for line in (ROOT / "Dockerfile").read_text().splitlines() if "uv sync" in line
    ]
    assert installs
    assert all("--extra otel" in line for line in installs)


# -- helm -------------------------------------------------------------------------------------
def chart_values(**gateway: Any) -> dict[str, Any]:
    values = dict(yaml.safe_load((CHART / "values.yaml").read_text()))
    values["gateway"] = {**values["gateway"], **gateway}
    return values


STRIPE_CREDENTIALS = [
    {
        "name": "PAYOUTSVC_STRIPE_SECRET_KEY",
        "valueFrom": {"secretKeyRef": {"name": "payoutsvc-stripe", "key": "secret-key"}},
    }
]


SECRET_ENV = ("PAYOUTSVC_ENCRYPTION_KEY", "PAYOUTSVC_DATABASE_URL", "PAYOUTSVC_STRIPE_SECRET_KEY")


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    documents = Chart(CHART, chart_values(credentials=STRIPE_CREDENTIALS)).render()
    return {f"{d['kind']}/{d['metadata']['name']}": d for docs in documents.values() for d in docs}


def containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    return list(document["spec"]["template"]["spec"]["containers"])


def test_the_chart_renders_the_objects_of_a_scaled_deployment(
    rendered: dict[str, dict[str, Any]],
) -> None:
    assert set(rendered) == {
        "Deployment/pay-api",
        "Service/pay-api",
        "Deployment/pay-worker",
        "Job/pay-migrate",
        "PodDisruptionBudget/pay-api",
        "PodDisruptionBudget/pay-worker",
    }
    pods = {name: d for name, d in rendered.items() if "template" in d["spec"]}
    role = {name: containers(d)[0]["args"][0] for name, d in pods.items()}
    assert role == {
        "Deployment/pay-api": "serve",
        "Deployment/pay-worker": "worker",
        "Job/pay-migrate": "migrate",
    }
    assert set(role.values()) <= cli_commands()
    for name in role:
        for container in containers(rendered[name]):
            assert container["image"] == "payoutsvc:0.1.0"
            assert {"requests", "limits"} <= set(container["resources"]), name


async def test_the_api_probes_answer_on_paths_the_app_serves(
    rendered: dict[str, dict[str, Any]], client: httpx.AsyncClient
) -> None:
    [api] = containers(rendered["Deployment/pay-api"])
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {p["name"] for p in api["ports"]} >= {api["livenessProbe"]["httpGet"]["port"]}
    for probe in ("livenessProbe", "readinessProbe"):
        answer = await client.get(api[probe]["httpGet"]["path"])
        assert answer.status_code == 200, answer.text
    assert {"name": "PAYOUTSVC_RUN_WORKER", "value": "false"} in api["env"]


def test_migrations_run_as_a_hook_before_install_and_upgrade(
    rendered: dict[str, dict[str, Any]],
) -> None:
    job = rendered["Job/pay-migrate"]
    hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
    assert set(hooks) == {"pre-install", "pre-upgrade"}
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_disruption_budgets_and_the_service_select_the_pods_they_mean(
    rendered: dict[str, dict[str, Any]],
) -> None:
    for component in ("api", "worker"):
        pods = rendered[f"Deployment/pay-{component}"]["spec"]["template"]["metadata"]["labels"]
        selector = rendered[f"PodDisruptionBudget/pay-{component}"]["spec"]["selector"]
        assert selector["matchLabels"].items() <= pods.items()
        assert rendered[f"Deployment/pay-{component}"]["spec"]["replicas"] == 2
    service = rendered["Service/pay-api"]["spec"]["selector"]
    worker_pods = rendered["Deployment/pay-worker"]["spec"]["template"]["metadata"]["labels"]
    assert not service.items() <= worker_pods.items()


def test_secrets_come_from_existing_secrets_never_from_values(
    rendered: dict[str, dict[str, Any]],
) -> None:
    for name, document in rendered.items():
        if "template" not in document["spec"]:
            continue
        env = {e["name"]: e for e in containers(document)[0]["env"]}
        assert all(known_env(n) or n.startswith("PAYOUTSVC_STRIPE_") for n in env), name
        for secret in SECRET_ENV:
            assert "value" not in env[secret], (name, secret)
            assert set(env[secret]["valueFrom"]["secretKeyRef"]) == {"name", "key"}, name
        assert env["PAYOUTSVC_ENVIRONMENT"]["value"] == "production"


def test_without_gateway_credentials_the_env_lists_none() -> None:
    documents = Chart(CHART, chart_values()).render()
    [api, *_] = documents["api.yaml"]
    names = [e["name"] for e in containers(api)[0]["env"]]
    assert not [n for n in names if n.startswith("PAYOUTSVC_STRIPE_")]
    assert len(names) == len(set(names))


def test_the_renderer_refuses_what_it_does_not_understand(tmp_path: Path) -> None:
    with pytest.raises(TemplateError):
        parse("{{ if .Values.x }}never closed")
    (tmp_path / "templates").mkdir()
    (tmp_path / "Chart.yaml").write_text("name: c\nversion: 1\nappVersion: 1\n")
    (tmp_path / "templates" / "t.yaml").write_text("a: {{ range .Values.x }}{{ end }}\n")
    with pytest.raises(TemplateError):
        Chart(tmp_path, {"x": [1]}).render()
