"""Deployment files: the kustomize overlays render with `kubectl kustomize`, every object passes
the Kubernetes schemas offline (kubernetes-validate, strict) and says what the design says;
the KEDA ScaledObject, which has no schema there, is checked against KEDA's required fields;
docker-compose.yml starts its services in order; the images match the manifests."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate as kv
import pytest
import yaml

from repository.layout import ROOT

DEPLOY = ROOT / "deploy"
OVERLAYS = ("cpu", "gpu")
NAMESPACE = "faceswap"
# The oldest Kubernetes these manifests target and the newest that kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", "1.37.0")
KEDA = ("keda.sh/v1alpha1", "ScaledObject")
WORKLOADS = ("Deployment", "StatefulSet", "Pod")
SECRET_ENV = {  # env var -> key of the Secret faceswap-secrets that the operator creates
    "FACESWAP_GATEWAY_HMAC_SECRET": "hmac-secret",
    "FACESWAP_GATEWAY_S3_ACCESS_KEY_ID": "s3-access-key-id",
    "FACESWAP_GATEWAY_S3_SECRET_ACCESS_KEY": "s3-secret-access-key",
}
KUBECTL_MISSING = ("kubectl not found: install Debian's package `kubernetes-client` (apt-get install -y "
                   "kubernetes-client; kubectl 1.20 with kustomize v2.0.3 renders these overlays) or point "
                   "KUBECTL at a kubectl binary")


def kubectl() -> str:
    path = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not path:
        pytest.fail(KUBECTL_MISSING)
    return path


@cache
def _render(overlay: str) -> tuple[dict, ...]:
    out = subprocess.run([kubectl(), "kustomize", str(DEPLOY / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"kubectl kustomize deploy/overlays/{overlay} failed:\n{out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def render(overlay: str) -> list[dict]:
    """The overlay's objects (a fresh copy each call: tests may modify them)."""
    return copy.deepcopy(list(_render(overlay)))


def find(objs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: list[dict], kind: str, name: str) -> dict:
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(obj: dict) -> dict:
    return obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]


def containers(obj: dict) -> list[dict]:
    spec = pod_spec(obj)
    return spec.get("initContainers", []) + spec["containers"]


def container(objs: list[dict], kind: str, name: str) -> dict:
    (c,) = [c for c in pod_spec(one(objs, kind, name))["containers"] if c["name"] == name]
    return c


def env_of(objs: list[dict], c: dict) -> dict[str, dict]:
    """Every environment variable of a container: envFrom ConfigMaps resolved in the rendered output
    (as {"value": ...}), then env entries as written (value or valueFrom)."""
    env: dict[str, dict] = {}
    for src in c.get("envFrom", []):
        assert "configMapRef" in src, f"{c['name']}: only ConfigMaps are expected in envFrom, got {src}"
        cm = one(objs, "ConfigMap", src["configMapRef"]["name"])
        env.update({k: {"value": v} for k, v in cm["data"].items()})
    for e in c.get("env", []):
        env[e["name"]] = {k: v for k, v in e.items() if k != "name"}
    return env


def port_number(c: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    (p,) = [p["containerPort"] for p in c["ports"] if p["name"] == port]
    return p


def matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --- schemas -----------------------------------------------------------------------------------

@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_passes_the_kubernetes_schemas(overlay, version):
    objs = render(overlay)
    errors, validated, no_schema = [], set(), set()
    for o in objs:
        ident = f"{o['kind']}/{o['metadata']['name']}"
        try:
            kv.validate(o, version, strict=True)
            validated.add(o["kind"])
        except kv.SchemaNotFoundError:
            no_schema.add((o["apiVersion"], o["kind"]))
        except kv.ValidationError as e:
            errors.append(f"{ident} at {'.'.join(map(str, e.path))}: {e.message}")
    assert not errors, "\n".join(errors)
    # Only KEDA's custom resource lacks a built-in schema; it is checked in test_scaled_object_*.
    assert no_schema == {KEDA}, f"objects without a schema in kubernetes-validate {version}: {no_schema}"
    assert validated >= {"Namespace", "ConfigMap", "Service", "Deployment", "StatefulSet",
                         "HorizontalPodAutoscaler", "PodDisruptionBudget"}, validated


def test_strict_validation_rejects_a_misspelled_field():
    """The schema check above can fail: a misspelled probe or a string port is refused."""
    triton = one(render("gpu"), "Deployment", "triton")
    c = pod_spec(triton)["containers"][0]
    c["readinesProbe"] = c.pop("readinessProbe")
    with pytest.raises(kv.ValidationError, match="readinesProbe"):
        kv.validate(triton, K8S_VERSIONS[0], strict=True)
    c["readinessProbe"] = c.pop("readinesProbe")
    c["ports"][0]["containerPort"] = "8000"
    with pytest.raises(kv.ValidationError, match="not of type 'integer'"):
        kv.validate(triton, K8S_VERSIONS[0], strict=True)


@pytest.mark.parametrize("path", sorted((DEPLOY / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_pass_the_kubernetes_schemas(path):
    for o in yaml.safe_load_all(path.read_text()):
        kv.validate(o, K8S_VERSIONS[0], strict=True)
        assert o["metadata"]["namespace"] == NAMESPACE


def test_example_volumes_are_the_claims_the_overlays_mount():
    examples = [o for o in yaml.safe_load_all((DEPLOY / "examples" / "volumes.yaml").read_text())]
    claims = {o["metadata"]["name"] for o in examples if o["kind"] == "PersistentVolumeClaim"}
    mounted = {v["persistentVolumeClaim"]["claimName"]
               for overlay in OVERLAYS for o in render(overlay) if o["kind"] in WORKLOADS
               for v in pod_spec(o).get("volumes", []) if "persistentVolumeClaim" in v}
    assert mounted == {"model-repository", "engine-cache"} and claims == mounted


# --- KEDA ----------------------------------------------------------------------------------------

# keda.sh/v1alpha1 ScaledObject, the fields of KEDA 2.x's CRD that this deployment uses or may
# use; kubernetes-validate has no schema for custom resources, so this is the check.
SCALED_OBJECT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object", "required": ["name"], "additionalProperties": False,
                    "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                   "name": {"type": "string", "minLength": 1},
                                   "envSourceContainerName": {"type": "string"}}},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {"type": "object"},
                "advanced": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"restoreToOriginalReplicaCount": {"type": "boolean"},
                                   "scalingModifiers": {"type": "object"},
                                   "horizontalPodAutoscalerConfig": {
                                       "type": "object", "additionalProperties": False,
                                       "properties": {"name": {"type": "string"},
                                                      "behavior": {"type": "object"}}}}},
                "triggers": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
                        "properties": {"type": {"type": "string"}, "name": {"type": "string"},
                                       "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                                       "useCachedMetrics": {"type": "boolean"},
                                       "authenticationRef": {"type": "object", "required": ["name"]},
                                       # KEDA reads trigger metadata as strings only
                                       "metadata": {"type": "object",
                                                    "additionalProperties": {"type": "string"}}}}},
            },
        },
    },
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaled_object_has_kedas_required_fields(overlay):
    (so,) = [o for o in render(overlay) if (o["apiVersion"], o["kind"]) == KEDA]
    jsonschema.validate(so, SCALED_OBJECT_SCHEMA)
    spec = so["spec"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    # The HPA behavior KEDA passes on must be a valid autoscaling/v2 behavior.
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "x"},
           "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 2, "behavior": behavior}}
    kv.validate(hpa, K8S_VERSIONS[0], strict=True)


def test_scaled_object_schema_rejects_bad_trigger_metadata():
    so = copy.deepcopy([o for o in render("cpu") if o["kind"] == "ScaledObject"][0])
    so["spec"]["triggers"][0]["metadata"]["listLength"] = 2  # not a string: KEDA refuses it
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(so, SCALED_OBJECT_SCHEMA)
    del so["spec"]["triggers"][0]["metadata"]
    with pytest.raises(jsonschema.ValidationError, match="'metadata' is a required property"):
        jsonschema.validate(so, SCALED_OBJECT_SCHEMA)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_scale_on_the_saq_queue_of_waiting_jobs(overlay):
    from gateway.jobs.queue import QUEUE_NAME, make_queue

    objs = render(overlay)
    so = one(objs, "ScaledObject", "worker")
    ref = so["spec"]["scaleTargetRef"]
    assert ref.get("kind", "Deployment") == "Deployment" and ref.get("apiVersion", "apps/v1") == "apps/v1"
    assert container(objs, "Deployment", ref["name"])["command"] == ["faceswap-worker"]
    assert "replicas" not in one(objs, "Deployment", ref["name"])["spec"], "KEDA owns the worker count"
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "redis"
    meta = trigger["metadata"]
    # The key saq itself keeps the gateway's waiting jobs under (not a guess at it).
    queued = make_queue("redis://localhost:6379/0").namespace("queued")
    assert meta["listName"] == queued == f"saq:{QUEUE_NAME}:queued"
    assert int(meta["listLength"]) >= 1
    # KEDA's operator lives in another namespace: the address names this one's redis Service.
    host, port = meta["address"].rsplit(":", 1)
    service, ns = host.split(".")[:2]
    redis = one(objs, "Service", service)
    assert ns == redis["metadata"]["namespace"] == NAMESPACE and host.endswith(".svc.cluster.local")
    assert int(port) in [p["port"] for p in redis["spec"]["ports"]]
    assert meta.get("databaseIndex", "0") == env_of(objs, container(objs, "Deployment", "worker"))[
        "FACESWAP_GATEWAY_REDIS_URL"]["value"].rsplit("/", 1)[1]


# --- what the manifests say ------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_triton_probes_ports_and_volumes(overlay):
    objs = render(overlay)
    c = container(objs, "Deployment", "triton")
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert port_number(c, c[probe]["httpGet"]["port"]) == 8000, probe
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "model load needs minutes"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    if overlay == "gpu":  # NVIDIA's container: its entrypoint stays, tritonserver is the argument
        assert c["args"][:3] == ["tritonserver", "--model-repository=/models",
                                 "--backend-config=python,shm-growth-byte-size=67108864"]
        # memory returns after large requests, as launch/server.py runs it
        assert "--grpc-infer-allocation-pool-size=0" in c["args"]
        assert {"name": "MALLOC_MMAP_THRESHOLD_", "value": "16777216"} in c["env"]
    else:  # the CPU image's entry point (launch/container.py) serves the mounted repository as built
        assert c["args"] == ["python", "-m", "launch.container", "--repository=/models"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(one(objs, "Deployment", "triton"))["volumes"]}
    assert mounts["model-repository"]["mountPath"] == "/models" and mounts["model-repository"]["readOnly"]
    assert volumes["model-repository"]["persistentVolumeClaim"] == {"claimName": "model-repository", "readOnly": True}
    assert mounts["shm"]["mountPath"] == "/dev/shm" and volumes["shm"]["emptyDir"]["medium"] == "Memory"

    labels = one(objs, "Deployment", "triton")["spec"]["template"]["metadata"]["labels"]
    service = one(objs, "Service", "triton")
    assert {p["port"] for p in service["spec"]["ports"]} == {8000, 8001, 8002}
    headless = one(objs, "Service", "triton-headless")
    assert headless["spec"]["clusterIP"] == "None" and [p["port"] for p in headless["spec"]["ports"]] == [8001]
    assert matches(service["spec"]["selector"], labels) and matches(headless["spec"]["selector"], labels)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gpu_overlay_asks_for_a_gpu(overlay):
    objs = render(overlay)
    triton = one(objs, "Deployment", "triton")
    c = container(objs, "Deployment", "triton")
    assert triton["metadata"]["annotations"]["faceswap/model-profile"] == overlay
    if overlay == "gpu":
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        spec = pod_spec(triton)
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        # Where onnxruntime's TensorRT provider caches engines (repository/generate.py) is a volume.
        cache_path = re.search(r'"trt_engine_cache_path"\]\s*=\s*"([^"]+)"',
                               (ROOT / "repository" / "generate.py").read_text()).group(1)
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == "engine-cache"]
        assert mount["mountPath"] == cache_path and not mount.get("readOnly")
        (vol,) = [v for v in spec["volumes"] if v["name"] == "engine-cache"]
        assert vol["persistentVolumeClaim"]["claimName"] == "engine-cache"
    else:
        for o in objs:
            if o["kind"] in WORKLOADS:
                for k in containers(o):
                    res = k.get("resources", {})
                    assert "nvidia.com/gpu" not in {**res.get("requests", {}), **res.get("limits", {})}, k["name"]
                assert "nodeSelector" not in pod_spec(o) and "tolerations" not in pod_spec(o)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_scales_on_cpu_with_probes_and_a_disruption_budget(overlay):
    from gateway.api.routes import health

    objs = render(overlay)
    gateway = one(objs, "Deployment", "gateway")
    c = container(objs, "Deployment", "gateway")
    assert c["command"] == ["python", "-m", "gateway"]
    assert "replicas" not in gateway["spec"], "the HPA owns the gateway count"
    routes = {r.path for r in health.router.routes}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert c[probe]["httpGet"]["path"] == path and path in routes
        assert port_number(c, c[probe]["httpGet"]["port"]) == 8080
    (hpa,) = find(objs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert 1 <= hpa["spec"].get("minReplicas", 1) <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert "cpu" in c["resources"]["requests"], "CPU utilisation is relative to the request"
    (pdb,) = find(objs, "PodDisruptionBudget")
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert matches(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a drain could never evict a gateway"
    service = one(objs, "Service", "gateway")
    assert matches(service["spec"]["selector"], labels) and service["spec"]["ports"][0]["port"] == 8080


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_and_workers_share_settings_that_point_at_the_services(overlay):
    objs = render(overlay)
    gw = env_of(objs, container(objs, "Deployment", "gateway"))
    assert gw == env_of(objs, container(objs, "Deployment", "worker"))
    assert gw["FACESWAP_GATEWAY_HOST"]["value"] == "0.0.0.0" and gw["FACESWAP_GATEWAY_PORT"]["value"] == "8080"
    assert gw["FACESWAP_GATEWAY_TRITON_URL"]["value"] == "dns:///triton-headless:8001"
    one(objs, "Service", "triton-headless")
    assert gw["FACESWAP_GATEWAY_REDIS_URL"]["value"] == "redis://redis:6379/0"
    one(objs, "Service", "redis")
    assert {"FACESWAP_GATEWAY_S3_ENDPOINT_URL", "FACESWAP_GATEWAY_S3_BUCKET", "FACESWAP_GATEWAY_S3_REGION"} <= set(gw)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_come_by_reference_only(overlay):
    objs = render(overlay)
    assert not find(objs, "Secret"), "secrets are created by the operator, never rendered"
    for name in ("gateway", "worker"):
        env = env_of(objs, container(objs, "Deployment", name))
        for var, key in SECRET_ENV.items():
            assert env[var] == {"valueFrom": {"secretKeyRef": {"name": "faceswap-secrets", "key": key}}}, (name, var)
    for o in objs:
        if o["kind"] == "ConfigMap":
            leaked = [k for k in o["data"] if re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY", k)]
            assert not leaked, f"ConfigMap {o['metadata']['name']} holds {leaked}"
        for c in containers(o) if o["kind"] in WORKLOADS else []:
            for e in c.get("env", []):
                if re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY", e["name"]):
                    assert "value" not in e and "secretKeyRef" in e["valueFrom"], (c["name"], e["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_sized_pinned_and_unprivileged(overlay):
    objs = render(overlay)
    seen = set()
    for o in objs:
        if o["kind"] not in WORKLOADS:
            continue
        spec = pod_spec(o)
        for c in containers(o):
            seen.add(c["name"])
            res = c.get("resources", {})
            assert {"cpu", "memory"} <= set(res.get("requests", {})), f"{c['name']}: requests"
            assert "memory" in res.get("limits", {}), f"{c['name']}: memory limit"
            image = c["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert tag and tag != "latest", f"{c['name']}: image {image} is not pinned"
            assert spec["securityContext"]["runAsNonRoot"] is True, c["name"]
            assert spec["securityContext"]["runAsUser"] > 0, c["name"]
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], c["name"]
    assert seen == {"triton", "gateway", "worker", "redis"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lives_in_one_labelled_namespace(overlay):
    objs = render(overlay)
    assert [o["metadata"]["name"] for o in find(objs, "Namespace")] == [NAMESPACE]
    for o in objs:
        assert o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "faceswap", o["metadata"]["name"]
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == NAMESPACE, o["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_keeps_an_append_only_file_on_a_volume(overlay):
    objs = render(overlay)
    redis = one(objs, "StatefulSet", "redis")
    c = container(objs, "StatefulSet", "redis")
    assert re.fullmatch(r"redis:7(\.\d+)*", c["image"])
    args = c["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert [m["mountPath"] for m in c["volumeMounts"]] == ["/data"]
    assert [t["metadata"]["name"] for t in redis["spec"]["volumeClaimTemplates"]] == ["data"]


# --- images ----------------------------------------------------------------------------------------

def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    lines = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1].strip()) for ln in text.splitlines() if ln.strip()]


def test_gateway_image_runs_the_gateway_as_the_manifests_user():
    steps = dockerfile(ROOT / "Dockerfile")
    # The base is a build argument (a local debootstrap image where no registry can be reached);
    # two stages: pip and the build's leftovers stay in the first.
    assert steps[0] == ("ARG", "BASE=python:3.11-slim")
    assert [a for i, a in steps if i == "FROM"] == ["${BASE} AS build", "${BASE}"]
    assert ("ARG", "DEPS=runtime") in steps
    runs = " ".join(a for i, a in steps if i == "RUN")
    assert "pip install -r requirements.lock" in runs and "pip install --no-deps -e ." in runs
    assert "pip install -c /tmp/constraints.txt -r /tmp/deps.txt" in runs  # DEPS=runtime: no test tools
    assert "python /tmp/deps.py > /tmp/deps.txt" in runs  # pyproject's dependencies, no extras (no server)
    assert "sh /tmp/strip.sh /opt/venv" in runs  # no pip, no perf_analyzer in the image
    final = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM"):]
    assert ("COPY", "--from=build /opt/venv /opt/venv") in final and ("COPY", "--from=build /app /app") in final
    assert not any(k == "RUN" and "pip " in a for k, a in final), "the image's own stage installs nothing"
    assert any(i == "HEALTHCHECK" and "/healthz" in a for i, a in steps)
    env = " ".join(a for i, a in steps if i == "ENV")
    assert "FACESWAP_GATEWAY_C2PA_DEV_DIR=/data/c2pa" in env  # /app is not the user's to write
    users = [a for i, a in steps if i == "USER"]
    uid = one(render("cpu"), "Deployment", "gateway")["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert users and users[-1].split(":")[0] == str(uid) and uid != 0
    assert ("EXPOSE", "8080") in steps and steps[-1] == ("CMD", '["python", "-m", "gateway"]')
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".run", "models", "build", "worker/node_modules", "out"} <= ignored


def test_image_requirements_split_the_gateway_from_the_server():
    sys.path.insert(0, str(DEPLOY / "images"))
    try:
        import deps
    finally:
        sys.path.pop(0)
    gateway = {re.split(r"[<>=\[]", r)[0].lower() for r in deps.requirements([], str(ROOT / "pyproject.toml"))}
    server = {re.split(r"[<>=\[]", r)[0].lower()
              for r in deps.requirements(["server", "serverless"], str(ROOT / "pyproject.toml"))}
    assert not gateway & {"onnx", "onnxruntime", "openvino", "nvidia-pytriton", "pytest", "ruff", "mkdocs"}
    assert {"nvidia-pytriton", "onnxruntime", "openvino", "onnx", "numpy", "backoff"} <= server
    pins = {re.split(r"==", c)[0].lower() for c in deps.constraints(str(ROOT / "requirements.lock"))}
    unpinned = {p for p in server if p.replace("_", "-") not in {q.replace("_", "-") for q in pins}}
    assert not unpinned, f"in an image but not pinned in requirements.lock: {sorted(unpinned)}"
    assert all("[" not in c for c in deps.constraints(str(ROOT / "requirements.lock")))


def test_cpu_triton_image_builds_its_repository_at_start_as_the_manifests_user():
    steps = dockerfile(DEPLOY / "triton-cpu.Dockerfile")
    assert steps[0] == ("ARG", "BASE=python:3.11-slim")
    assert [a for i, a in steps if i == "FROM"] == ["${BASE} AS build", "${BASE}"]
    runs = " ".join(a for i, a in steps if i == "RUN")
    # the content gate's default detector (nudenet) is in unless CONTENT_EXTRA= leaves it out
    assert "python /tmp/deps.py server serverless $CONTENT_EXTRA > /tmp/deps.txt" in runs
    assert ("ARG", "CONTENT_EXTRA=content") in steps
    assert 'pip install --no-deps "runpod==$RUNPOD_VERSION"' in runs and ("ARG", "RUNPOD_VERSION=1.12.0") in steps
    assert "libpython" in runs and "sh /tmp/strip.sh /opt/venv" in runs
    copies = [a for i, a in steps if i == "COPY"]
    assert not any("models" in a.split()[0] or ".onnx" in a for a in copies), "no weights in the image"
    assert any(i == "HEALTHCHECK" and "/v2/health/ready" in a for i, a in steps)
    assert steps[-1] == ("CMD", '["python", "-m", "launch.container"]')
    uid = one(render("cpu"), "Deployment", "triton")["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert [a for i, a in steps if i == "USER"][-1] == f"{uid}:{uid}"
    env = " ".join(a for i, a in steps if i == "ENV")
    assert "FACESWAP_MODELS_DIR=/var/lib/faceswap/models" in env and "FACESWAP_CACHE_DIR=/engine_cache" in env


def test_overlays_name_the_images_make_images_builds():
    script = (DEPLOY / "images.sh").read_text()
    names = set(re.findall(r"^\s+([a-z-]+)\)\s+file=", script, re.M))
    assert names == {"gateway", "triton-cpu", "redis", "seaweedfs"} and '-t "faceswap-$image:$TAG"' in script
    for overlay, triton in (("cpu", "faceswap-triton-cpu:0.1.0"), ("gpu", "faceswap-triton:0.1.0")):
        objs = render(overlay)
        assert container(objs, "Deployment", "triton")["image"] == triton
        assert container(objs, "Deployment", "gateway")["image"] == "faceswap-gateway:0.1.0"
        assert container(objs, "Deployment", "worker")["image"] == "faceswap-gateway:0.1.0"


def test_triton_image_serves_the_pipeline_as_the_manifests_user():
    steps = dockerfile(DEPLOY / "triton.Dockerfile")
    (base,) = [a for i, a in steps if i == "FROM"]
    assert base.startswith("nvcr.io/nvidia/tritonserver:")
    assert ("ARG", "TRITON_TAG=24.10-py3") in steps
    runs = " ".join(a for i, a in steps if i == "RUN")
    for pkg in ("numpy==1.26.4", "opencv-python-headless==4.10.0.84", "Pillow==10.4.0", "onnxruntime==1.20.1"):
        assert pkg in runs
    assert ("COPY", "pipeline/ /app/pipeline/") in steps and ("ENV", "PYTHONPATH=/app") in steps
    uid = one(render("gpu"), "Deployment", "triton")["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert [a for i, a in steps if i == "USER"][-1] == f"{uid}:{uid}"


_IMPORTED = """
import importlib.util, json, sys, types
from pathlib import Path
sys.modules["triton_python_backend_utils"] = types.ModuleType("triton_python_backend_utils")
root, repo = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
for i, path in enumerate(sorted(repo.glob("*/1/model.py"))):
    spec = importlib.util.spec_from_file_location(f"_model_{i}", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
files = {str(Path(m.__file__).resolve().relative_to(root)) for m in list(sys.modules.values())
         if getattr(m, "__file__", None) and Path(m.__file__).resolve().is_relative_to(root)
         and ".venv" not in Path(m.__file__).parts}
print(json.dumps(sorted(files)))
"""


@pytest.fixture(scope="module")
def gpu_model_imports(models, tmp_path_factory) -> list[str]:
    """The project's files that loading every model.py of a ``gpu`` repository imports (relative
    to the checkout), with a stand-in for the Python backend's ``triton_python_backend_utils``."""
    from repository.generate import build

    repo = tmp_path_factory.mktemp("gpu") / "model_repository"
    build(repo, "gpu", models)
    p = subprocess.run([sys.executable, "-c", _IMPORTED, str(ROOT), str(repo)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    files = json.loads(p.stdout.strip().splitlines()[-1])
    assert "model_repository/frame_swapper.py" in files and "pipeline/frames.py" in files, files
    return files


def _served_from(mapping: dict[str, str], rel: str) -> bool:
    """Whether ``rel`` (a checkout path) lands at /app/``rel`` through ``mapping`` (source -> target:
    a directory with a trailing slash, or a file)."""
    return any(f"/app/{rel}" == (dst + rel[len(src):] if src.endswith("/") else dst)
               for src, dst in mapping.items() if rel == src or (src.endswith("/") and rel.startswith(src)))


def test_the_gpu_image_has_every_module_the_repository_imports(gpu_model_imports):
    """A model.py that imports a module the image lacks fails to load in Triton (the image once
    copied three files of model_repository/ and not frame_swapper.py: face_swap could not load)."""
    mapping = {}
    for kind, args in dockerfile(DEPLOY / "triton.Dockerfile"):
        if kind == "COPY" and not args.startswith("--"):
            *srcs, dst = args.split()
            for src in srcs:
                mapping[src] = dst if src.endswith("/") or not dst.endswith("/") else dst + Path(src).name
    missing = [f for f in gpu_model_imports if not _served_from(mapping, f)]
    assert not missing, f"deploy/triton.Dockerfile does not copy {missing} to /app"


def test_compose_mounts_every_module_the_repository_imports(gpu_model_imports):
    volumes = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["triton"]["volumes"]
    mapping = {}
    for v in volumes:
        src, dst = v.split(":")[:2]
        if src.startswith("./"):
            mapping[src[2:] + "/"] = dst + "/"
    missing = [f for f in gpu_model_imports if not _served_from(mapping, f)]
    assert not missing, f"docker-compose.yml's triton service does not mount {missing} under /app"


# --- docker-compose.yml ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_every_service(compose):
    assert set(compose["services"]) == {"triton", "redis", "s3", "gateway", "worker"}
    assert set(compose["volumes"]) >= {"engine_cache", "redis_data", "s3_data"}


def test_compose_starts_gateway_and_workers_after_healthy_dependencies(compose):
    svc = compose["services"]
    for name in ("gateway", "worker"):
        assert svc[name]["depends_on"]["triton"] == {"condition": "service_healthy"}, name
        assert svc[name]["depends_on"]["redis"] == {"condition": "service_healthy"}, name
        assert svc[name]["depends_on"]["s3"] == {"condition": "service_healthy"}, name
        assert svc[name]["build"] == "."
    for name in ("triton", "redis", "s3"):
        assert svc[name]["healthcheck"]["test"], name
    assert "/v2/health/ready" in " ".join(svc["triton"]["healthcheck"]["test"])
    assert svc["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert svc["worker"]["command"] == ["faceswap-worker"] and svc["worker"]["deploy"]["replicas"] == 2
    assert svc["gateway"]["ports"] == ["127.0.0.1:${GATEWAY_PORT:-8080}:8080"]
    assert svc["worker"]["deploy"]["mode"] == "replicated"  # podman-compose reads replicas only then
    assert "--appendonly" in svc["redis"]["command"]


def test_compose_services_point_at_each_other(compose):
    svc = compose["services"]
    env = svc["gateway"]["environment"]
    assert env == svc["worker"]["environment"]
    assert env["FACESWAP_GATEWAY_TRITON_URL"] == "triton:8001"
    assert "127.0.0.1:${TRITON_GRPC_PORT:-8001}:8001" in svc["triton"]["ports"]
    assert env["FACESWAP_GATEWAY_REDIS_URL"] == "redis://redis:6379/0"
    assert env["FACESWAP_GATEWAY_S3_ENDPOINT_URL"] == "http://s3:8333"
    assert svc["s3"]["environment"]["S3_BUCKET"] == env["FACESWAP_GATEWAY_S3_BUCKET"]
    assert "tritonserver --model-repository=/models" in svc["triton"]["command"]
    for name, s in svc.items():
        for p in s.get("ports", []):
            assert p.startswith("127.0.0.1:"), f"{name} publishes {p} beyond loopback"


def test_compose_takes_secrets_from_the_environment_only(compose):
    svc = compose["services"]
    for name in ("gateway", "worker"):
        for var in SECRET_ENV:
            assert re.fullmatch(rf"\$\{{{var}:\?[^}}]+\}}", svc[name]["environment"][var]), (name, var)
    s3 = svc["s3"]["environment"]
    assert s3["S3_ACCESS_KEY_ID"].startswith("${FACESWAP_GATEWAY_S3_ACCESS_KEY_ID:?")
    assert s3["S3_SECRET_ACCESS_KEY"].startswith("${FACESWAP_GATEWAY_S3_SECRET_ACCESS_KEY:?")


def test_compose_s3_runs_the_seaweedfs_script_it_mounts(compose):
    s3 = compose["services"]["s3"]
    assert re.fullmatch(r"chrislusf/seaweedfs:\d+\.\d+", s3["image"])
    host, target = s3["volumes"][0].split(":")[:2]
    script = ROOT / host
    assert script.is_file() and s3["entrypoint"] == ["/bin/sh", target]
    text = script.read_text()
    assert "-s3.config=" in text and "s3.bucket.create" in text
    ready = re.search(r"READY=\$\{SEAWEEDFS_READY:-([^}]+)\}", text).group(1)
    assert s3["healthcheck"]["test"] == ["CMD", "test", "-f", ready]
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0


def test_cpu_compose_file_swaps_in_the_cpu_images_and_drops_the_gpu(compose):
    class Loader(yaml.SafeLoader):
        pass

    # compose's merge tags: !reset drops the base's value, !override replaces it (lists are appended otherwise)
    Loader.add_constructor("!reset", lambda loader, node: ("!reset", None))
    Loader.add_constructor("!override", lambda loader, node: ("!override", loader.construct_sequence(node)
                                                              if isinstance(node, yaml.SequenceNode) else None))
    cpu = yaml.load((DEPLOY / "compose" / "cpu.yml").read_text(), Loader=Loader)["services"]
    assert set(cpu) <= set(compose["services"])
    t = cpu["triton"]
    assert t["image"] == "${TRITON_CPU_IMAGE:-localhost/faceswap-triton-cpu:0.1.0}"
    assert t["deploy"][0] == "!reset" and t["command"][0] == "!reset"  # no GPU reservation, the image's CMD
    kind, mounts = t["volumes"]
    assert kind == "!override" and "triton_models:/var/lib/faceswap/models" in mounts
    assert not any("$" in m for m in mounts), "podman-compose 1.6 does not interpolate !override lists"
    assert t["healthcheck"]["test"][0] == "!override" and "/v2/health/ready" in " ".join(t["healthcheck"]["test"][1])
    assert cpu["gateway"]["image"] == cpu["worker"]["image"] == "${GATEWAY_IMAGE:-localhost/faceswap-gateway:0.1.0}"
    assert cpu["redis"]["image"].endswith("localhost/faceswap-redis:0.1.0}")
    assert cpu["s3"]["image"].endswith("localhost/faceswap-seaweedfs:0.1.0}")


# --- what the lead's part must provide (these fail until it lands) ----------------------------------

def test_settings_named_by_the_deployment_exist():
    from gateway.core.config import Settings

    names = set()
    for overlay in OVERLAYS:
        objs = render(overlay)
        names |= set(env_of(objs, container(objs, "Deployment", "gateway")))
    names |= set(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["gateway"]["environment"])
    fields = {f"FACESWAP_GATEWAY_{f.upper()}" for f in Settings.model_fields}
    assert sorted(names - fields) == [], "set in deploy files but not a gateway setting"


def test_worker_command_is_a_console_script():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.get("faceswap-worker") == "gateway.worker:main"


def test_the_cuda_memory_pool_is_an_operator_setting(monkeypatch):
    """The torch profile's GPU tensors cross between stubs in Triton's CUDA memory pool:
    ``FACESWAP_CUDA_POOL_MB`` sizes it (bench.gpu_run: 1024); unset, Triton's default stays."""
    from launch.server import cuda_pool_args

    monkeypatch.delenv("FACESWAP_CUDA_POOL_MB", raising=False)
    assert cuda_pool_args() == []
    monkeypatch.setenv("FACESWAP_CUDA_POOL_MB", "1024")
    assert cuda_pool_args() == ["--cuda-memory-pool-byte-size=0:1073741824"]
    for bad in ("0", "-5", "1g"):
        monkeypatch.setenv("FACESWAP_CUDA_POOL_MB", bad)
        with pytest.raises(ValueError, match="FACESWAP_CUDA_POOL_MB"):
            cuda_pool_args()
