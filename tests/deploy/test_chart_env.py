"""The Helm chart against the service's code: env names, settings round trip, safety, scaling."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import pytest
import yaml
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from newsmtl import Settings
from tests.deploy._helm import (
    CHART,
    REPO,
    SCENARIOS,
    TOOLS_TIMEOUT_S,
    Tools,
    helm_template,
    merged_values,
    render,
)

# The first test to use `tools` may install helm and kubeconform (minutes on a cold cache).
pytestmark = pytest.mark.timeout(TOOLS_TIMEOUT_S + 600)

WORKLOAD_KINDS = {"Deployment", "StatefulSet"}


def settings_fields() -> dict[str, tuple[str, str, FieldInfo]]:
    """NEWSMTL_<SECTION>__<FIELD> -> (section, field, FieldInfo), walking the nested models."""
    fields: dict[str, tuple[str, str, FieldInfo]] = {}
    for section, section_field in Settings.model_fields.items():
        model = section_field.annotation
        assert isinstance(model, type) and hasattr(model, "model_fields"), section
        for name, info in model.model_fields.items():
            fields["NEWSMTL_%s__%s" % (section.upper(), name.upper())] = (section, name, info)
    return fields


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, "expected one %s, got %d" % (kind, len(found))
    return found[0]


def workload(docs: list[dict[str, Any]]) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] in WORKLOAD_KINDS]
    assert len(found) == 1, [doc["kind"] for doc in docs]
    return found[0]


def containers(work: dict[str, Any]) -> list[dict[str, Any]]:
    spec = work["spec"]["template"]["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def main_container(work: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in work["spec"]["template"]["spec"]["containers"] if c["name"] == "newsmtl"]
    return container


def pod_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The environment the service process sees, with placeholders for secrets and pod fields."""
    work = workload(docs)
    config = one(docs, "ConfigMap")
    container = main_container(work)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == config["metadata"]["name"]
        env.update(config["data"])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            env[entry["name"]] = "secret-from-%s" % entry["valueFrom"]["secretKeyRef"]["key"]
        elif "fieldRef" in entry.get("valueFrom", {}):
            assert entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            env[entry["name"]] = "%s-0" % work["metadata"]["name"]
        else:
            raise AssertionError("unexpected env entry %r" % entry)
    return env


def load_from_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    for name in [name for name in os.environ if name.startswith("NEWSMTL_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def assert_same(actual: Any, rendered: str, name: str) -> None:
    if isinstance(actual, SecretStr):
        actual = actual.get_secret_value()
    if isinstance(actual, bool):
        assert rendered in {"true", "false"} and (rendered == "true") == actual, name
    elif isinstance(actual, int | float):
        assert float(rendered) == actual, name
    elif isinstance(actual, Path):
        assert Path(rendered) == actual, name
    else:
        assert str(actual) == rendered, name


SCENARIO_IDS = sorted(SCENARIOS)


@pytest.fixture(scope="module")
def renders(tools: Tools) -> dict[str, list[dict[str, Any]]]:
    return {name: render(tools, files) for name, files in SCENARIOS.items()}


@pytest.mark.parametrize("scenario", SCENARIO_IDS)
def test_every_newsmtl_variable_is_a_settings_field(
    renders: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    docs = renders[scenario]
    known = settings_fields()
    names: set[str] = set(one(docs, "ConfigMap")["data"])
    for container in containers(workload(docs)):
        names |= {entry["name"] for entry in container.get("env", [])}
    for auth in by_kind(docs, "TriggerAuthentication"):
        names |= {ref["key"] for ref in auth["spec"].get("configMapTargetRef", [])}
    newsmtl_names = {name for name in names if name.startswith("NEWSMTL_")}
    assert newsmtl_names, "the chart rendered no NEWSMTL_* variable"
    unknown = sorted(newsmtl_names - set(known))
    assert not unknown, "not fields of newsmtl.Settings: %s" % unknown


@pytest.mark.parametrize("scenario", SCENARIO_IDS)
def test_rendered_environment_loads_into_settings(
    renders: dict[str, list[dict[str, Any]]], scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = renders[scenario]
    env = pod_env(docs)
    settings = load_from_env(monkeypatch, env)
    known = settings_fields()
    for name, rendered in env.items():
        section, field, _ = known[name]
        assert_same(getattr(getattr(settings, section), field), rendered, name)
    values = merged_values(SCENARIOS[scenario])
    assert settings.kafka.bootstrap_servers == values["config"]["kafka"]["bootstrapServers"]
    assert settings.http.port == values["httpPort"]
    assert settings.service.shutdown_grace_s == values["shutdown"]["graceSeconds"]


def _sample(section: str, name: str, info: FieldInfo) -> Any:
    """A valid value different from the default, so the round trip proves the value arrived."""
    special = {
        ("kafka", "bootstrap_servers"): "broker-1.example:9092,broker-2.example:9092",
        ("kafka", "security_protocol"): "SSL",
        ("redis", "url"): "rediss://cache.example:6380/2",
    }
    if (section, name) in special:
        return special[(section, name)]
    annotation = info.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    default = info.default
    if get_origin(annotation) is Literal:
        return next(choice for choice in get_args(annotation) if choice != default)
    if annotation is bool:
        return not default
    if annotation is int:
        upper = min((m.le for m in info.metadata if isinstance(m, annotated_types.Le)), default=None)
        return default + 1 if upper is None or default + 1 <= upper else default - 1
    if annotation is float:
        return default * 2 + 0.5
    if annotation is str:
        return "%s-sample" % (default or name.replace("_", "-"))
    raise AssertionError("no sample for %s.%s: %r" % (section, name, annotation))


def test_every_settings_field_round_trips_through_the_chart(
    tools: Tools, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    config_props = schema["properties"]["config"]["properties"]
    config: dict[str, dict[str, Any]] = {}
    expected: dict[str, Any] = {}
    for env_name, (section, name, info) in settings_fields().items():
        key = _camel(name)
        prop = config_props[section]["properties"][key]
        if "anyOf" not in prop:  # set by the chart itself (reserved), covered elsewhere
            continue
        value = _sample(section, name, info)
        config.setdefault(section, {})[key] = value
        expected[env_name] = value
    values_file = tmp_path / "every-field.yaml"
    values_file.write_text(yaml.safe_dump({"config": config}), encoding="utf-8")
    docs = render(tools, (str(values_file),))
    data = one(docs, "ConfigMap")["data"]
    missing = sorted(set(expected) - set(data))
    assert not missing, "config keys that did not reach the ConfigMap: %s" % missing
    settings = load_from_env(monkeypatch, pod_env(docs))
    for env_name, value in expected.items():
        section, name, _ = settings_fields()[env_name]
        actual = getattr(getattr(settings, section), name)
        assert actual == value, "%s: rendered %r, loaded %r, wanted %r" % (env_name, data[env_name], actual, value)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@pytest.mark.parametrize("scenario", SCENARIO_IDS)
def test_security_context_tmp_and_probes(renders: dict[str, list[dict[str, Any]]], scenario: str) -> None:
    work = workload(renders[scenario])
    pod = work["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for container in containers(work):
        ctx = container["securityContext"]
        assert ctx["runAsNonRoot"] is True, container["name"]
        assert ctx["readOnlyRootFilesystem"] is True, container["name"]
        assert ctx["allowPrivilegeEscalation"] is False, container["name"]
        assert ctx["capabilities"]["drop"] == ["ALL"], container["name"]
        assert ctx["seccompProfile"]["type"] == "RuntimeDefault", container["name"]
    main = main_container(work)
    (tmp,) = [mount for mount in main["volumeMounts"] if mount["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]
    (port,) = [p for p in main["ports"] if p["name"] == "http"]
    assert str(port["containerPort"]) == pod_env(renders[scenario])["NEWSMTL_HTTP__PORT"]
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert main["startupProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("scenario", SCENARIO_IDS)
def test_termination_grace_covers_the_drain(renders: dict[str, list[dict[str, Any]]], scenario: str) -> None:
    docs = renders[scenario]
    grace = float(one(docs, "ConfigMap")["data"]["NEWSMTL_SERVICE__SHUTDOWN_GRACE_S"])
    period = workload(docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    shutdown = merged_values(SCENARIOS[scenario])["shutdown"]
    assert grace == shutdown["graceSeconds"]
    assert period > grace
    assert period == math.ceil(shutdown["graceSeconds"]) + shutdown["marginSeconds"]


@pytest.mark.parametrize("scenario", SCENARIO_IDS)
def test_autoscaling_matches_the_consumer(renders: dict[str, list[dict[str, Any]]], scenario: str) -> None:
    docs = renders[scenario]
    values = merged_values(SCENARIOS[scenario])
    autoscaling = values["autoscaling"]
    work = workload(docs)
    data = one(docs, "ConfigMap")["data"]
    scaled = by_kind(docs, "ScaledObject")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    if not autoscaling["enabled"]:
        assert not scaled and not hpas
        assert work["spec"]["replicas"] == values["replicaCount"] <= autoscaling["inputPartitions"]
        return
    assert "replicas" not in work["spec"], "the autoscaler owns the replica count"
    if not autoscaling["keda"]["enabled"]:
        (hpa,) = hpas
        assert not scaled
        assert hpa["spec"]["maxReplicas"] <= autoscaling["inputPartitions"]
        assert hpa["spec"]["scaleTargetRef"]["kind"] == work["kind"]
        assert hpa["spec"]["scaleTargetRef"]["name"] == work["metadata"]["name"]
        return
    (obj,) = scaled
    assert not hpas
    spec = obj["spec"]
    assert spec["maxReplicaCount"] <= autoscaling["inputPartitions"]
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
    assert spec["scaleTargetRef"]["kind"] == work["kind"]
    assert spec["scaleTargetRef"]["name"] == work["metadata"]["name"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert all(isinstance(value, str) for value in meta.values()), meta
    # The scaler measures exactly the group and topic the service consumes.
    assert meta["bootstrapServers"] == data["NEWSMTL_KAFKA__BOOTSTRAP_SERVERS"]
    assert meta["consumerGroup"] == data["NEWSMTL_KAFKA__GROUP_ID"]
    assert meta["topic"] == data["NEWSMTL_TOPICS__INPUT"]
    assert meta["offsetResetPolicy"] == data["NEWSMTL_KAFKA__AUTO_OFFSET_RESET"]
    # Guards against idle consumers and invalid (-1) offsets.
    assert meta["allowIdleConsumers"] == "false"
    assert meta["scaleToZeroOnInvalidOffset"] == "false"
    assert int(meta["lagThreshold"]) == autoscaling["keda"]["lagThreshold"] > 0
    protocol = data["NEWSMTL_KAFKA__SECURITY_PROTOCOL"]
    if protocol.startswith("SASL"):
        assert "authenticationRef" in trigger
    if protocol.startswith("SASL") and not autoscaling["keda"]["existingTriggerAuthentication"]:
        auth = one(docs, "TriggerAuthentication")
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
        refs = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
        assert refs["password"]["name"] == values["existingSecret"]["name"]
        (user,) = auth["spec"]["configMapTargetRef"]
        assert user["key"] in data and user["name"] == one(docs, "ConfigMap")["metadata"]["name"]


@pytest.mark.parametrize("scenario", SCENARIO_IDS)
def test_static_membership_only_in_statefulset_mode(
    renders: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    docs = renders[scenario]
    work = workload(docs)
    env = {entry["name"]: entry for entry in main_container(work).get("env", [])}
    name = "NEWSMTL_KAFKA__GROUP_INSTANCE_ID"
    assert name not in one(docs, "ConfigMap")["data"]
    if work["kind"] == "StatefulSet":
        assert env[name]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        headless = [svc for svc in by_kind(docs, "Service") if svc["spec"].get("clusterIP") == "None"]
        assert [svc["metadata"]["name"] for svc in headless] == [work["spec"]["serviceName"]]
    else:
        assert name not in env, "random Deployment pod names must not be static member ids"


@pytest.mark.parametrize("scenario", SCENARIO_IDS)
def test_no_secret_values_rendered(renders: dict[str, list[dict[str, Any]]], scenario: str) -> None:
    docs = renders[scenario]
    assert not by_kind(docs, "Secret")
    assert not [name for name in one(docs, "ConfigMap")["data"] if "PASSWORD" in name]
    for entry in main_container(workload(docs)).get("env", []):
        if "PASSWORD" in entry["name"]:
            assert "secretKeyRef" in entry["valueFrom"], entry


def test_gpu_values_request_a_gpu_and_cuda(renders: dict[str, list[dict[str, Any]]]) -> None:
    docs = renders["gpu"]
    pod = workload(docs)["spec"]["template"]["spec"]
    limits = main_container(workload(docs))["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1
    assert one(docs, "ConfigMap")["data"]["NEWSMTL_MODEL__PROVIDERS"] == "cuda"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert main_container(workload(docs))["image"].startswith('newsmtl-gpu:')
    cpu_limits = main_container(workload(renders["default"]))["resources"].get("limits", {})
    assert "nvidia.com/gpu" not in cpu_limits


def test_model_bundle_sources(renders: dict[str, list[dict[str, Any]]]) -> None:
    pvc = workload(renders["fixed-replicas-pvc"])["spec"]["template"]["spec"]
    assert pod_env(renders["fixed-replicas-pvc"])["NEWSMTL_MODEL__BUNDLE_PATH"] == "/models/bundle/bundles/v3"
    (volume,) = [v for v in pvc["volumes"] if v["name"] == "model-bundle"]
    assert volume["persistentVolumeClaim"] == {"claimName": "newsmtl-models", "readOnly": True}

    image = workload(renders["statefulset-sasl"])["spec"]["template"]["spec"]
    (init,) = image["initContainers"]
    assert init["image"] == "registry.example.com/ml/newsmtl-bundle:2024.06.1"
    assert init["command"] == ["cp", "-R", "/bundle/.", "/models/bundle/"]
    assert pod_env(renders["statefulset-sasl"])["NEWSMTL_MODEL__BUNDLE_PATH"] == "/models/bundle"

    assert "NEWSMTL_MODEL__BUNDLE_PATH" not in pod_env(renders["default"]), "packaged bundle: no path"


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["autoscaling.maxReplicas=13"], "exceeds autoscaling.inputPartitions (12)"),
        (["autoscaling.enabled=false", "replicaCount=20"], "exceeds autoscaling.inputPartitions"),
        (["autoscaling.keda.fallback.replicas=9"], "fallback.replicas (9) exceeds"),
        (["config.kafka.securityProtocol=SASL_SSL", "config.kafka.saslMechanism=PLAIN"], "needs existingSecret.name"),
        (
            ["config.kafka.securityProtocol=SASL_SSL", "config.kafka.saslMechanism=GSSAPI", "existingSecret.name=s"],
            "existingTriggerAuthentication",
        ),
        (["config.kafka.saslPassword=hunter2"], "use existingSecret.keys.kafkaSaslPassword"),
        (["config.kafka.groupInstanceId=x"], "set by the chart"),
        (["config.service.shutdownGraceS=5"], "use shutdown.graceSeconds"),
        (["config.kafka.bogusSetting=1"], "additional properties 'bogusSetting' not allowed"),
        (["config.batching.maxBatchSize=0"], "maxBatchSize"),
        (["gpu.enabled=true"], "config.model.providers is cpu"),
        (["modelBundle.source=pvc"], "needs modelBundle.pvc.claimName"),
        (["modelBundle.source=image", "modelBundle.image.repository=m"], "needs a tag or a digest"),
        (["autoscaling.keda.enabled=false", "autoscaling.minReplicas=0"], "needs KEDA"),
        (["shutdown.marginSeconds=0"], "marginSeconds"),
        (["workload.kind=DaemonSet"], "workload/kind"),
    ],
)
def test_bad_values_fail_the_render_clearly(tools: Tools, sets: list[str], message: str) -> None:
    proc = helm_template(tools, (), sets)
    assert proc.returncode != 0, "helm template accepted %s" % sets
    assert message in proc.stderr, proc.stderr


def test_values_schema_is_generated_from_settings() -> None:
    path = REPO / "deploy" / "checks" / "values_schema.py"
    spec = importlib.util.spec_from_file_location("newsmtl_values_schema", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    assert committed == module.values_schema(), (
        "values.schema.json is stale: python deploy/checks/values_schema.py > %s"
        % (CHART / "values.schema.json").relative_to(REPO)
    )


def test_values_yaml_documents_every_key() -> None:
    """Every key of values.yaml (and values-gpu.yaml) has a comment line right above it."""
    for name in ("values.yaml", "values-gpu.yaml"):
        lines = (CHART / name).read_text(encoding="utf-8").splitlines()
        undocumented = []
        for index, line in enumerate(lines):
            stripped = line.strip()
            if not stripped or stripped.startswith("#") or stripped.startswith("- ") or ":" not in stripped:
                continue
            indent = len(line) - len(line.lstrip())
            value = stripped.split(":", 1)[1].strip()
            previous = lines[index - 1].strip() if index else ""
            is_section = value == ""
            # Leaf keys need their own comment; a section may be introduced by its first child's.
            if not is_section and not previous.startswith("#") and not _inside_documented_block(lines, index, indent):
                undocumented.append("%s:%d %s" % (name, index + 1, stripped))
        assert not undocumented, "keys without a comment above them:\n" + "\n".join(undocumented)


def _inside_documented_block(lines: list[str], index: int, indent: int) -> bool:
    """True for keys inside a structured default documented as a whole (resources, behavior, ...):
    some ancestor key has a `# --` comment right above it."""
    for back in range(index - 1, -1, -1):
        stripped = lines[back].strip()
        if not stripped or stripped.startswith("#"):
            continue
        back_indent = len(lines[back]) - len(lines[back].lstrip())
        if back_indent >= indent:
            continue
        indent = back_indent
        if stripped.startswith("- "):
            continue
        if _comment_above(lines, back).startswith("# --"):
            return True
        if indent == 0:
            return False
    return False


def _comment_above(lines: list[str], index: int) -> str:
    """First line of the comment block directly above line ``index`` ("" if none)."""
    first = ""
    for back in range(index - 1, -1, -1):
        stripped = lines[back].strip()
        if not stripped.startswith("#"):
            break
        first = stripped
    return first


def test_chart_app_version_is_the_package_version() -> None:
    import tomllib

    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["appVersion"] == version, "bump deploy/helm/newsmtl/Chart.yaml appVersion (and version)"
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text(encoding="utf-8"))
    assert compose["services"]["newsmtl"]["image"] == "newsmtl:%s" % version
