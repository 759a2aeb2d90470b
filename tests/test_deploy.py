"""The deployment files: images, the Kustomize base and overlays, KubeRay's RayCluster.

Every overlay is rendered with `kubectl kustomize`; every core resource is validated offline
against Kubernetes' own schemas (kubernetes-validate, strict: unknown fields fail), the
RayCluster against KubeRay's CRD schema kept in deploy/k8s/crds; then the properties that
docs/operators.md promises are checked on what would actually be applied.
"""

from __future__ import annotations

import base64
import copy
import functools
import ipaddress
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
OVERLAYS = ("tryout", "production")
CRD_FILE = DEPLOY / "k8s" / "crds" / "ray.io_rayclusters.yaml"
# The oldest Kubernetes the guide supports; the sandboxed workers' fields exist there too.
K8S_VERSION = "1.30"
NAMESPACE = "autoswarm"
KUBECTL = shutil.which("kubectl")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
PLACEHOLDER_PREFIX = "change-me"
PRIVATE_NETS = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]

Doc = dict[str, Any]

# -- rendering and schemas ----------------------------------------------------------------


@functools.cache
def _render(overlay: str) -> tuple[Doc, ...]:
    assert KUBECTL is not None
    done = subprocess.run(
        [KUBECTL, "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {overlay} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    """The name of each overlay in turn."""
    if KUBECTL is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    return str(request.param)


def rendered(overlay: str) -> list[Doc]:
    """A private copy of what `kubectl kustomize` renders for `overlay`."""
    if KUBECTL is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    return copy.deepcopy(list(_render(overlay)))


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    """The resources of `kind` (and `name`, where given)."""
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


@functools.cache
def _crd_schema() -> Doc:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(CRD_FILE.read_text(encoding="utf-8"), Loader=loader)
    assert crd["kind"] == "CustomResourceDefinition"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema: Doc = version["schema"]["openAPIV3Schema"]
    return schema


def closed(schema: Doc) -> Doc:
    """`schema` rejecting fields it does not name, as `kubectl apply`'s strict validation does."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: closed(sub) for name, sub in out["properties"].items()}
        if "additionalProperties" not in out and not out.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = closed(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = closed(out["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [closed(sub) for sub in out[key]]
    return out


@functools.cache
def _raycluster_validator() -> jsonschema.protocols.Validator:
    """KubeRay's schema, closed everywhere but in the pod templates.

    A pod template in KubeRay's CRD is a copy of the PodTemplateSpec of the Kubernetes release
    KubeRay was built against; the copy kept here predates fields the workers use (hostUsers,
    appArmorProfile). So the templates are checked here only for the fields the copy knows,
    and field by field, strictly, against Kubernetes' own PodTemplate (`check_raycluster`).
    """
    original = _crd_schema()
    schema = closed(original)
    spec, spec_closed = original["properties"]["spec"], schema["properties"]["spec"]
    head = spec_closed["properties"]["headGroupSpec"]["properties"]
    head["template"] = spec["properties"]["headGroupSpec"]["properties"]["template"]
    worker = spec_closed["properties"]["workerGroupSpecs"]["items"]["properties"]
    worker["template"] = spec["properties"]["workerGroupSpecs"]["items"]["properties"]["template"]
    validator_class = jsonschema.validators.validator_for(schema, jsonschema.Draft202012Validator)
    validator_class.check_schema(schema)
    return validator_class(schema)


def pod_templates(raycluster: Doc) -> Iterator[tuple[str, Doc]]:
    """(group name, pod template) for the head and each worker group."""
    yield "head", raycluster["spec"]["headGroupSpec"]["template"]
    for group in raycluster["spec"].get("workerGroupSpecs", []):
        yield group["groupName"], group["template"]


def check_core(doc: Doc) -> None:
    """Validate a core Kubernetes resource, strictly, or fail the test saying where."""
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {where}: {exc.message}")
    except kubernetes_validate.SchemaNotFoundError as exc:
        pytest.fail(exc.message)


def check_raycluster(doc: Doc) -> None:
    """Validate a RayCluster against KubeRay's schema and its pod templates against core's."""
    errors = sorted(_raycluster_validator().iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        lines = [f"{'.'.join(str(p) for p in e.path)}: {e.message}" for e in errors]
        pytest.fail("RayCluster does not match KubeRay's CRD:\n" + "\n".join(lines))
    for group, template in pod_templates(doc):
        check_core(
            {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": f"{doc['metadata']['name']}-{group}"},
                "template": template,
            }
        )


# -- pods, labels and network policies ----------------------------------------------------


def pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc, Doc]]:
    """(what, pod labels, pod spec) for every pod the rendered resources would create."""
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in WORKLOAD_KINDS:
            template = doc["spec"]["template"]
            yield name, template["metadata"].get("labels", {}), template["spec"]
        elif doc["kind"] == "RayCluster":
            for group, template in pod_templates(doc):
                yield f"{name}[{group}]", template["metadata"].get("labels", {}), template["spec"]


def containers(spec: Doc) -> list[Doc]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def component(docs: list[Doc], name: str) -> dict[str, str]:
    """The pod labels of the pods with `app.kubernetes.io/component: name` (exactly one kind)."""
    found = [
        labels
        for _, labels, _ in pod_specs(docs)
        if labels.get("app.kubernetes.io/component") == name
    ]
    assert found, f"no pod with component {name}"
    return dict(found[0])


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector matches `labels`."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def covers_private_ranges(ip_block: Doc) -> bool:
    """Whether an ipBlock reaches pod addresses (any private range left un-excepted)."""
    cidr = ipaddress.ip_network(ip_block["cidr"])
    excepted = [ipaddress.ip_network(e) for e in ip_block.get("except", [])]
    return any(
        net.overlaps(cidr) and not any(net.subnet_of(e) for e in excepted if e.version == 4)
        for net in PRIVATE_NETS
    )


def peer_matches_pod(peer: Doc, labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicy peer can match a pod of our namespace with `labels`."""
    if "ipBlock" in peer:
        return covers_private_ranges(peer["ipBlock"])
    if "namespaceSelector" in peer and not selects(
        peer["namespaceSelector"], {"kubernetes.io/metadata.name": NAMESPACE}
    ):
        return False
    return selects(peer.get("podSelector", {}), labels)


def port_allowed(rule: Doc, port: int) -> bool:
    ports = rule.get("ports", [])
    return not ports or any(p.get("port") in (None, port) for p in ports)


def rules(docs: list[Doc], labels: dict[str, str], direction: str) -> list[Doc] | None:
    """The `direction` ("Ingress", "Egress") rules for pods with `labels`; None: not isolated."""
    policies = []
    for policy in find(docs, "NetworkPolicy"):
        spec = policy["spec"]
        # Without policyTypes: Ingress, and Egress too where egress rules are given.
        types = spec.get("policyTypes") or ["Ingress", *(["Egress"] if "egress" in spec else [])]
        if direction in types and selects(spec["podSelector"], labels):
            policies.append(spec)
    if not policies:
        return None
    return [rule for spec in policies for rule in spec.get(direction.lower(), [])]


def can_connect(docs: list[Doc], src: dict[str, str], dst: dict[str, str], port: int) -> bool:
    """Whether the rendered NetworkPolicies let a pod with `src` labels open `dst`:`port`."""
    out = rules(docs, src, "Egress")
    out_ok = out is None or any(
        port_allowed(rule, port)
        and (not rule.get("to") or any(peer_matches_pod(p, dst) for p in rule["to"]))
        for rule in out
    )
    into = rules(docs, dst, "Ingress")
    in_ok = into is None or any(
        port_allowed(rule, port)
        and (not rule.get("from") or any(peer_matches_pod(p, src) for p in rule["from"]))
        for rule in into
    )
    return out_ok and in_ok


def reaches_internet(docs: list[Doc], labels: dict[str, str]) -> bool:
    """Whether pods with `labels` may open a connection to an address outside the cluster."""
    egress = rules(docs, labels, "Egress")
    if egress is None:
        return True
    for rule in egress:
        if not rule.get("to"):
            return True
        for peer in rule["to"]:
            cidr = ipaddress.ip_network(peer["ipBlock"]["cidr"]) if "ipBlock" in peer else None
            if cidr is not None and not any(cidr.subnet_of(net) for net in PRIVATE_NETS):
                return True
    return False


# -- Dockerfiles ---------------------------------------------------------------------------


def dockerfile(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/docker/<name>.Dockerfile, continuations joined."""
    text = (DEPLOY / "docker" / f"{name}.Dockerfile").read_text(encoding="utf-8")
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, args = (pending + line).partition(" ")
        instructions.append((word.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, f"{name}.Dockerfile ends inside a continued line"
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (instruction, _) in enumerate(instructions) if instruction == "FROM"]
    assert starts, "no FROM"
    return instructions[starts[-1] :]


def dockerfile_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """The default value of each `ARG NAME=value`."""
    pairs = (args.split("=", 1) for ins, args in instructions if ins == "ARG" and "=" in args)
    return {name: value for name, value in pairs}


# -- every overlay renders and validates --------------------------------------------------


def test_every_core_resource_validates_against_kubernetes_schemas(overlay: str) -> None:
    """Each rendered core resource passes strict validation against Kubernetes' schemas."""
    docs = rendered(overlay)
    core = [d for d in docs if d["kind"] != "RayCluster"]
    assert len(core) >= 15
    for doc in core:
        check_core(doc)


def test_raycluster_validates_against_kuberays_crd(overlay: str) -> None:
    """The RayCluster passes KubeRay's CRD schema; its pod templates pass core's."""
    (raycluster,) = find(rendered(overlay), "RayCluster")
    assert raycluster["apiVersion"] == "ray.io/v1"
    check_raycluster(raycluster)


def test_strict_validation_rejects_a_misspelt_field() -> None:
    """A misspelt field in a Deployment fails validation: the check is not vacuous."""
    deployment = one(rendered("production"), "Deployment", "autoswarm-coordinator")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(pytest.fail.Exception, match="livenessprobe"):
        check_core(deployment)


def test_raycluster_validation_rejects_kuberay_mistakes() -> None:
    """A misspelt group field, or a number where KubeRay wants a string, fails validation."""
    (raycluster,) = find(rendered("production"), "RayCluster")
    misspelt = copy.deepcopy(raycluster)
    misspelt["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    with pytest.raises(pytest.fail.Exception, match="maxReplica"):
        check_raycluster(misspelt)
    unquoted = copy.deepcopy(raycluster)
    unquoted["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    with pytest.raises(pytest.fail.Exception, match="num-cpus"):
        check_raycluster(unquoted)


def test_stored_crd_is_kuberays_raycluster_v1() -> None:
    """The kept CRD is KubeRay's RayCluster with the v1 schema the manifests name."""
    schema = _crd_schema()
    spec = schema["properties"]["spec"]["properties"]
    assert {"headGroupSpec", "workerGroupSpecs", "enableInTreeAutoscaling"} <= set(spec)
    group = spec["workerGroupSpecs"]["items"]
    assert {"groupName", "maxReplicas", "minReplicas", "template"} <= set(group["required"])


def test_namespaced_resources_land_in_one_namespace(overlay: str) -> None:
    """Everything but the Namespace itself is in the autoswarm namespace."""
    docs = rendered(overlay)
    outside = [
        f"{d['kind']}/{d['metadata']['name']}"
        for d in docs
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") != NAMESPACE
    ]
    assert outside == []
    assert [d["metadata"]["name"] for d in find(docs, "Namespace")] == [NAMESPACE]


def test_every_image_is_pinned_to_a_tag(overlay: str) -> None:
    """No container runs an untagged or `latest` image."""
    for what, _, spec in pod_specs(rendered(overlay)):
        for container in containers(spec):
            name, _, tag = container["image"].rpartition(":")
            assert name and "/" not in tag and tag != "latest", f"{what}: {container['image']}"


# -- coordinator and Redis ----------------------------------------------------------------


def test_redis_appends_every_write_to_its_volume(overlay: str) -> None:
    """Redis runs the official redis:7 image with appendonly yes, its data on a claim."""
    redis = one(rendered(overlay), "StatefulSet", "autoswarm-redis")
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("redis:7")
    command = shlex.split(" ".join(container.get("command", []) + container.get("args", [])))
    line = " ".join(command)
    assert "--appendonly yes" in line
    assert "--dir /data" in line
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/data"] == claim["metadata"]["name"]


def test_coordinator_probes_livez_and_readyz(overlay: str) -> None:
    """Liveness asks /livez, readiness /readyz, both on the coordinator's port 8000."""
    deployment = one(rendered(overlay), "Deployment", "autoswarm-coordinator")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == 8000


def test_coordinator_uses_the_redis_statefulset_and_the_lineage_claim(overlay: str) -> None:
    """The coordinator's Redis URL names the Redis Service; its data folder is the claim."""
    docs = rendered(overlay)
    pod = one(docs, "Deployment", "autoswarm-coordinator")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    for ref in container.get("envFrom", []):
        config = one(docs, "ConfigMap", ref["configMapRef"]["name"])
        env.update({k: {"name": k, "value": v} for k, v in config["data"].items()})
    url = env["AUTOSWARM_REDIS_URL"]["value"]
    assert re.fullmatch(r"redis://:\$\(REDIS_PASSWORD\)@autoswarm-redis:6379/\d+", url)
    assert one(docs, "Service", "autoswarm-redis")["spec"]["ports"][0]["port"] == 6379
    assert env["AUTOSWARM_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "autoswarm-tokens"
    data_dir = env["AUTOSWARM_DATA_DIR"]["value"]
    volume = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}[data_dir]
    (claim,) = [v["persistentVolumeClaim"] for v in pod["volumes"] if v["name"] == volume]
    assert find(docs, "PersistentVolumeClaim", claim["claimName"])


def test_every_config_and_secret_reference_resolves(overlay: str) -> None:
    """Pods name only ConfigMaps that are rendered, and only the three documented Secrets."""
    docs = rendered(overlay)
    configs = {d["metadata"]["name"] for d in find(docs, "ConfigMap")}
    documented = {"autoswarm-tokens", "autoswarm-redis", "autoswarm-llm-keys"}
    for what, _, spec in pod_specs(docs):
        for container in containers(spec):
            for ref in container.get("envFrom", []):
                if "configMapRef" in ref:
                    assert ref["configMapRef"]["name"] in configs, what
                if "secretRef" in ref:
                    assert ref["secretRef"]["name"] in documented, what
            for var in container.get("env", []):
                secret = var.get("valueFrom", {}).get("secretKeyRef")
                if secret:
                    assert secret["name"] in documented, what


def test_tryout_secrets_are_placeholders() -> None:
    """The try-out's generated Secrets hold only change-me placeholders, never real keys."""
    secrets = find(rendered("tryout"), "Secret")
    assert {s["metadata"]["name"] for s in secrets} == {
        "autoswarm-tokens",
        "autoswarm-redis",
        "autoswarm-llm-keys",
    }
    assert set(one(secrets, "Secret", "autoswarm-tokens")["data"]) == {
        "admin-token",
        "worker-token",
        "proposer-token",
    }
    for secret in secrets:
        for key, value in secret["data"].items():
            assert base64.b64decode(value).decode().startswith(PLACEHOLDER_PREFIX), key


def test_the_launcher_can_read_the_queue_where_it_sizes_itself_by_it() -> None:
    """NUM_WORKERS=auto reads the queue (read scope): production's launcher gets the read
    token the operator's guide has them create, from the Secret, optional elsewhere."""
    docs = rendered("production")
    sizes = [
        c["data"]["NUM_WORKERS"] for c in find(docs, "ConfigMap") if "NUM_WORKERS" in c["data"]
    ]
    assert sizes == ["auto"]
    deployment = one(docs, "Deployment", "autoswarm-ray-launcher")
    (launcher,) = containers(deployment["spec"]["template"]["spec"])
    env = {var["name"]: var for var in launcher.get("env", [])}
    ref = env["AUTOSWARM_READ_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "autoswarm-tokens" and ref["key"] == "read-token"
    guide = (REPO / "docs" / "operators.md").read_text()
    assert "--from-literal=read-token=" in guide and "token create --scope read" in guide


def test_production_applies_no_secrets() -> None:
    """Production renders no Secret, so `kubectl apply -k` never overwrites real ones."""
    assert find(rendered("production"), "Secret") == []


# -- pods' privileges ---------------------------------------------------------------------


def test_every_container_runs_as_non_root(overlay: str) -> None:
    """Every container must run as a non-root user and cannot gain privileges."""
    docs = rendered(overlay)
    checked = 0
    for what, _, spec in pod_specs(docs):
        pod_context = spec.get("securityContext", {})
        for container in containers(spec):
            context = {**pod_context, **container.get("securityContext", {})}
            assert context.get("runAsNonRoot") is True, f"{what}/{container['name']}"
            assert context.get("runAsUser", 1) != 0, f"{what}/{container['name']}"
            assert context.get("privileged", False) is False, f"{what}/{container['name']}"
            assert context.get("allowPrivilegeEscalation") is False, f"{what}/{container['name']}"
            checked += 1
    (raycluster,) = find(docs, "RayCluster")
    autoscaler = raycluster["spec"]["autoscalerOptions"]["securityContext"]
    assert autoscaler["runAsNonRoot"] is True and autoscaler["allowPrivilegeEscalation"] is False
    assert checked >= 6


def test_only_the_ray_head_holds_a_service_account_token(overlay: str) -> None:
    """No pod but the Ray head (its autoscaler resizes the cluster) mounts an API token."""
    for what, labels, spec in pod_specs(rendered(overlay)):
        if labels.get("app.kubernetes.io/component") == "ray-head":
            continue
        assert spec.get("automountServiceAccountToken") is False, what


def test_dockerfiles_set_a_non_root_user() -> None:
    """Each image's final stage switches to a numeric, non-root USER."""
    for name in ("coordinator", "worker"):
        final = final_stage(dockerfile(name))
        users = [args for instruction, args in final if instruction == "USER"]
        assert users, f"{name}.Dockerfile sets no USER"
        user = users[-1].split(":")[0]
        assert user.isdigit() and int(user) != 0, f"{name}.Dockerfile: USER {users[-1]}"


# -- Ray: head, GPU workers, sandbox ------------------------------------------------------


def test_ray_head_runs_no_experiments(overlay: str) -> None:
    """The head offers Ray no CPU and no GPU, and asks for no GPU, so no actor lands there."""
    (raycluster,) = find(rendered(overlay), "RayCluster")
    head = raycluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"]["num-gpus"] == "0"
    for container in head["template"]["spec"]["containers"]:
        assert "nvidia.com/gpu" not in container.get("resources", {}).get("limits", {})


def test_production_gpu_workers_autoscale_on_their_class_nodes() -> None:
    """Each production worker group asks for GPUs, picks its GPU class, autoscales in bounds."""
    (raycluster,) = find(rendered("production"), "RayCluster")
    assert raycluster["spec"]["enableInTreeAutoscaling"] is True
    groups = raycluster["spec"]["workerGroupSpecs"]
    assert groups
    for group in groups:
        spec = group["template"]["spec"]
        (container,) = spec["containers"]
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        assert spec["nodeSelector"]["nvidia.com/gpu.product"].startswith("NVIDIA-")
        assert 0 <= group["minReplicas"] < group["maxReplicas"]


def test_production_workers_can_start_the_sandbox() -> None:
    """Production's workers keep the sandbox on and get what bubblewrap needs in a pod."""
    (raycluster,) = find(rendered("production"), "RayCluster")
    for group in raycluster["spec"]["workerGroupSpecs"]:
        spec = group["template"]["spec"]
        assert spec["hostUsers"] is False
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["procMount"] == "Unmasked"
            assert context["seccompProfile"]["type"] == "Unconfined"
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get("AUTOSWARM_TRUST", "sandboxed") == "sandboxed"


def test_tryout_runs_trusted_code_on_cpu_workers() -> None:
    """The try-out's workers use no GPU, run trusted code, and keep the default profiles."""
    docs = rendered("tryout")
    (raycluster,) = find(docs, "RayCluster")
    for group in raycluster["spec"]["workerGroupSpecs"]:
        spec = group["template"]["spec"]
        assert "hostUsers" not in spec
        for container in spec["containers"]:
            assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env["AUTOSWARM_TRUST"] == "trusted-code"
            assert "procMount" not in container.get("securityContext", {})
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (swarm,) = [c for c in find(docs, "ConfigMap") if "GPUS_PER_WORKER" in c["data"]]
    assert swarm["data"]["GPUS_PER_WORKER"] == "0"


def test_ray_version_matches_the_worker_image() -> None:
    """spec.rayVersion names the Ray the worker image installs."""
    args = dockerfile_defaults(dockerfile("worker"))
    for overlay_name in OVERLAYS:
        (raycluster,) = find(rendered(overlay_name), "RayCluster")
        assert raycluster["spec"]["rayVersion"] == args["RAY_VERSION"]


def test_production_budget_spares_gpu_workers_in_a_drain() -> None:
    """A PodDisruptionBudget lets a drain take production's GPU workers one at a time."""
    docs = rendered("production")
    worker = component(docs, "ray-worker")
    budgets = [
        b for b in find(docs, "PodDisruptionBudget") if selects(b["spec"]["selector"], worker)
    ]
    assert [b["spec"].get("maxUnavailable") for b in budgets] == [1]


# -- network policies ---------------------------------------------------------------------


def test_namespace_denies_all_traffic_by_default(overlay: str) -> None:
    """A policy selecting every pod, with no rule, isolates both directions."""
    default_deny = [
        p
        for p in find(rendered(overlay), "NetworkPolicy")
        if p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert len(default_deny) == 1


def test_ray_workers_reach_only_the_coordinator_dns_and_ray(overlay: str) -> None:
    """Experiment pods reach the coordinator's port, cluster DNS and Ray pods, nothing more."""
    docs = rendered(overlay)
    worker = component(docs, "ray-worker")
    ray = {"ray-head", "ray-worker", "ray-launcher"}
    egress = rules(docs, worker, "Egress")
    assert egress, "no NetworkPolicy selects the Ray worker pods for egress"
    for rule in egress:
        assert rule.get("to"), f"an egress rule for Ray workers allows every destination: {rule}"
        for peer in rule["to"]:
            assert "ipBlock" not in peer, f"Ray workers may reach addresses: {peer}"
            if "namespaceSelector" in peer:  # cluster DNS, and only its port
                assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
                assert {p["port"] for p in rule["ports"]} == {53}
                continue
            matched = {
                labels["app.kubernetes.io/component"]
                for _, labels, _ in pod_specs(docs)
                if peer_matches_pod(peer, labels)
            }
            assert matched <= ray | {"coordinator"}, matched
            if "coordinator" in matched:
                assert {p["port"] for p in rule["ports"]} == {8000}
    coordinator = component(docs, "coordinator")
    assert can_connect(docs, worker, coordinator, 8000)
    assert not reaches_internet(docs, worker)


def test_only_the_coordinator_reaches_redis(overlay: str) -> None:
    """No pod but the coordinator may open Redis' port, Ray workers least of all."""
    docs = rendered(overlay)
    redis = component(docs, "redis")
    allowed = {
        labels["app.kubernetes.io/component"]
        for _, labels, _ in pod_specs(docs)
        if labels.get("app.kubernetes.io/component") != "redis"
        and can_connect(docs, labels, redis, 6379)
    }
    assert allowed == {"coordinator"}
    assert not can_connect(docs, component(docs, "ray-worker"), redis, 6379)


def test_policy_model_sees_a_path_opened_to_redis() -> None:
    """Opening Redis to every pod shows up as a path from the Ray workers: not vacuous."""
    docs = rendered("production")
    worker, redis = component(docs, "ray-worker"), component(docs, "redis")
    assert not can_connect(docs, worker, redis, 6379)
    one(docs, "NetworkPolicy", "autoswarm-ray-to-coordinator")["spec"]["egress"].append(
        {"to": [{"podSelector": {}}]}
    )
    one(docs, "NetworkPolicy", "autoswarm-redis")["spec"]["ingress"].append(
        {"from": [{"podSelector": {}}]}
    )
    assert can_connect(docs, worker, redis, 6379)


# -- images -------------------------------------------------------------------------------


def test_coordinator_image_serves_port_8000_and_checks_livez() -> None:
    """The coordinator image installs its extras, exposes 8000 and health-checks /livez."""
    instructions = dockerfile("coordinator")
    final = final_stage(instructions)
    assert ("EXPOSE", "8000") in final
    (healthcheck,) = [args for instruction, args in final if instruction == "HEALTHCHECK"]
    assert "/livez" in healthcheck
    runs = " ".join(args for instruction, args in instructions if instruction == "RUN")
    assert "[coordinator,llm]" in runs


def test_worker_image_has_bubblewrap_and_the_worker_extras() -> None:
    """The worker image is CUDA-based, installs bubblewrap and the worker and ray extras."""
    instructions = dockerfile("worker")
    froms = [args for instruction, args in instructions if instruction == "FROM"]
    defaults = dockerfile_defaults(instructions)
    assert any("cuda" in defaults.get(f.strip("${}"), f) for f in froms)
    runs = " ".join(args for instruction, args in instructions if instruction == "RUN")
    assert "bubblewrap" in runs
    assert "[worker,ray]" in runs


def test_docker_builds_ignore_the_checkout_clutter() -> None:
    """Each Dockerfile has its own .dockerignore keeping .git and .venv out of the context."""
    for name in ("coordinator", "worker"):
        ignore = DEPLOY / "docker" / f"{name}.Dockerfile.dockerignore"
        patterns = {
            line.strip()
            for line in ignore.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")
        }
        assert {".git", ".venv"} <= patterns
