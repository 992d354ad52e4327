"""The test harness itself: services.sh, the session fixtures and the failure report."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.fixtures.kafka_utils import wait_for_kafka
from tests.fixtures.services import REPO_ROOT, SERVICES_SH, LocalServices


def test_status_of_an_empty_work_dir_is_not_running(tmp_path: Path) -> None:
    services = LocalServices(tmp_path / "services")
    assert services.is_running() is False
    assert services.endpoints() is None
    proc = services.run("status", check=False)
    assert proc.returncode == 3
    assert "kafka: stopped" in proc.stderr
    assert "redis: stopped" in proc.stderr
    assert proc.stdout == ""


def test_unknown_subcommand_fails_with_usage(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(SERVICES_SH), "frobnicate"],
        env=dict(os.environ, NEWSMTL_SERVICES_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "kafka-restart" in proc.stderr


def test_kafka_start_without_saved_state_fails(tmp_path: Path) -> None:
    proc = LocalServices(tmp_path / "services").run("kafka-start", check=False)
    assert proc.returncode != 0
    assert "no saved broker state" in proc.stderr


@pytest.mark.integration
async def test_session_services_answer(kafka_bootstrap: str, redis_url: str) -> None:
    await wait_for_kafka(kafka_bootstrap, timeout=10)
    client = aioredis.from_url(redis_url)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


@pytest.mark.integration
def test_failed_integration_test_reports_the_broker_log(
    kafka_bootstrap: str, services_backend, tmp_path: Path
) -> None:
    # Run a deliberately failing integration test in a child pytest that shares our services.
    test_file = tmp_path / "test_child.py"
    test_file.write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.integration
            def test_fails(kafka_bootstrap):
                assert kafka_bootstrap == "deliberately wrong"
            """
        )
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            os.devnull,
            "--rootdir",
            str(tmp_path),
            "-p",
            "tests.fixtures.services",
            "-p",
            "no:cacheprovider",
            "-q",
            str(test_file),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "deliberately wrong" in output
    if services_backend.log_tail is None:  # an external broker: there is no log to attach
        assert "broker log tail" not in output
    else:
        _, _, section = output.partition("broker log tail (")
        assert section, output[-3000:]
        attached = [line for line in section.splitlines()[1:] if line.startswith("[")]
        assert attached, section[:3000]
        # The attached lines are the broker's own log lines.
        whole_log = services_backend.log_tail(1_000_000)
        assert attached[0] in whole_log
        assert attached[-1] in whole_log
