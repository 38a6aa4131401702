"""Schedules through the gateway on the real broker: create, list, pause, resume, delete,
each answered with the schedules fold's verdict once this gateway's projection applied it;
a bad cron or timezone is a 422 naming the field and appends nothing."""

from __future__ import annotations

import pytest

from tests.integration.test_gateway_writes import ADMIN, gateway, records  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

NIGHTLY = {"queue": "reports", "task_type": "report.render", "schedule_id": "nightly", "cron": "30 2 * * *",
           "timezone": "Europe/Berlin", "misfire": "run_once", "payload": {"kind": "daily"}, "priority": "high"}


async def test_schedule_lifecycle_over_http(gateway, broker, topics) -> None:  # noqa: F811
    client, _ = gateway
    created = await client.post("/v1/schedules", json=NIGHTLY, headers=ADMIN)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["verdict"] == "accepted" and body["schedule"]["state"] == "active"
    assert body["schedule"]["task"]["payload"] == {"kind": "daily"} and body["schedule"]["next_slot"] is not None

    again = await client.post("/v1/schedules", json=NIGHTLY, headers=ADMIN)
    assert again.status_code == 409 and again.json()["error"]["problems"][0]["field"] == "schedule_id"

    listed = await client.get("/v1/schedules", params={"queue": "reports"})
    assert [s["schedule_id"] for s in listed.json()] == ["nightly"]

    paused = await client.post("/v1/schedules/nightly/pause", headers=ADMIN)
    assert paused.status_code == 200 and paused.json()["schedule"]["state"] == "paused"
    twice = await client.post("/v1/schedules/nightly/pause", headers=ADMIN)
    assert twice.status_code == 409 and "already paused" in twice.json()["error"]["message"]
    resumed = await client.post("/v1/schedules/nightly/resume", headers=ADMIN)
    assert resumed.json()["schedule"]["state"] == "active"

    deleted = await client.delete("/v1/schedules/nightly", headers=ADMIN)
    assert deleted.status_code == 200 and deleted.json()["schedule"]["state"] == "deleted"
    assert (await client.get("/v1/schedules/nightly")).status_code == 404
    assert (await client.post("/v1/schedules/nightly/pause", headers=ADMIN)).status_code == 404


@pytest.mark.parametrize(("change", "field"), [({"cron": "61 * * * *"}, "cron"),
                                               ({"timezone": "Mars/Olympus"}, "timezone"),
                                               ({"interval_ms": 5000}, "cron")])
async def test_a_bad_definition_is_a_422_naming_the_field_and_appends_nothing(
        gateway, broker, topics, change, field) -> None:  # noqa: F811
    client, _ = gateway
    before = await records(broker, topics)
    response = await client.post("/v1/schedules", json=NIGHTLY | change, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert field in [p["field"] for p in response.json()["error"]["problems"]]
    assert await records(broker, topics) == before


async def test_only_admins_write_schedules(gateway) -> None:  # noqa: F811
    client, _ = gateway
    assert (await client.post("/v1/schedules", json=NIGHTLY)).status_code == 403
