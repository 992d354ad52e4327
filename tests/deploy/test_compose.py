"""deploy/compose.yaml against the compose specification, and its wiring."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import yaml

from newsmtl import Settings
from tests.deploy._helm import REPO, TOOLS_TIMEOUT_S, Tools

# The first test to use `tools` may install helm and kubeconform (minutes on a cold cache).
pytestmark = pytest.mark.timeout(TOOLS_TIMEOUT_S + 600)

COMPOSE = REPO / "deploy" / "compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def test_compose_file_matches_the_compose_spec(tools: Tools, compose: dict[str, Any]) -> None:
    # The schema compose itself validates with, from github.com/compose-spec/compose-go (Go proxy).
    schema = json.loads(tools.compose_schema.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = ["%s: %s" % ("/".join(map(str, e.absolute_path)), e.message) for e in validator.iter_errors(compose)]
    assert not errors, errors
    broken = json.loads(json.dumps(compose))
    broken["services"]["newsmtl"]["depends_on"]["redis"]["condition"] = "service_ready"
    assert list(validator.iter_errors(broken)), "the schema must reject an unknown depends_on condition"


def test_services_are_health_checked_and_ordered(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert not services["kafka"]["image"].endswith(":latest")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    for name in ("kafka", "redis", "newsmtl"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    depends = services["newsmtl"]["depends_on"]
    assert depends["kafka"]["condition"] == "service_healthy"
    assert depends["redis"]["condition"] == "service_healthy"
    assert depends["kafka-topics"]["condition"] == "service_completed_successfully"
    assert services["kafka-topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_service_is_built_from_the_cpu_dockerfile_and_locked_down(compose: dict[str, Any]) -> None:
    service = compose["services"]["newsmtl"]
    context = (COMPOSE.parent / service["build"]["context"]).resolve()
    assert context == REPO
    assert (context / service["build"]["dockerfile"]) == REPO / "deploy" / "docker" / "Dockerfile"
    assert service["read_only"] is True
    assert any(entry.startswith("/tmp") for entry in service["tmpfs"])
    assert service["cap_drop"] == ["ALL"]
    assert service["user"] == "10001:10001"
    grace = float(service["environment"]["NEWSMTL_SERVICE__SHUTDOWN_GRACE_S"])
    stop = re.fullmatch(r"(\d+)s", service["stop_grace_period"])
    assert stop is not None and int(stop.group(1)) > grace


def test_service_environment_names_are_settings_fields(compose: dict[str, Any]) -> None:
    known = {
        "NEWSMTL_%s__%s" % (section.upper(), name.upper())
        for section, field in Settings.model_fields.items()
        for name in field.annotation.model_fields  # type: ignore[union-attr]
    }
    env = compose["services"]["newsmtl"]["environment"]
    assert set(env) <= known, sorted(set(env) - known)
    # The broker address the service uses is the one the broker advertises to containers.
    advertised = compose["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert env["NEWSMTL_KAFKA__BOOTSTRAP_SERVERS"] in advertised
    topics = compose["services"]["kafka-topics"]["command"][0]
    for name in ("INPUT", "TOPICS", "STYLES", "DLQ"):
        assert env["NEWSMTL_TOPICS__%s" % name] in re.split(r"[\s;]+", topics), name
