"""``fifoflow monitor --prefect-events`` against a real Prefect API (the local ephemeral one,
a temporary PREFECT_HOME) and a real Valkey, read back through the Prefect client.

The monitor runs as a real process pointed at the API (PREFECT_API_URL): a crossing is
stored as a ``fifoflow.alert.dead`` event on the queue's resource, its resolution as
``fifoflow.resolved.dead``, and an Automation listening for the first acts on it.
"""

from __future__ import annotations

import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import Processes, run_cli, wait_for
from fifoflow import Queue
from test_alerts import make_dead
from test_prefect_worker import prefect_api, prefect_home  # noqa: F401 - the fixtures

pytestmark = [pytest.mark.xdist_group("prefect"), pytest.mark.timeout(240)]


def events(client: Any, name: str, resource_id: str) -> list[Any]:
    """The stored events of this name on this resource, oldest first."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    flt = EventFilter(
        event=EventNameFilter(name=[name]), resource=EventResourceFilter(id=[resource_id])
    )
    return sorted(client.read_events(filter=flt, limit=50).events, key=lambda e: e.occurred)


def test_monitor_emits_prefect_events_that_an_automation_acts_on(
    vqueue: Queue,
    prefect_api: Any,  # noqa: F811 - the fixture imported above
    procs: Processes,
    tmp_path: Path,
) -> None:
    from prefect.events.actions import DoNothing
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    q = vqueue.name
    resource = f"fifoflow.queue.{q}"
    automation_id = prefect_api.create_automation(
        AutomationCore(
            name=f"fifoflow dead letters {q}",
            trigger=EventTrigger(
                expect={"fifoflow.alert.dead"},
                match={"prefect.resource.id": resource},
                posture=Posture.Reactive,
                threshold=1,
                within=timedelta(0),
            ),
            actions=[DoNothing()],
        )
    )
    make_dead(vqueue, 2)
    out, err = tmp_path / "monitor.out", tmp_path / "monitor.err"
    with open(out, "w") as fo, open(err, "w") as fe:
        mon = procs.start(
            *(sys.executable, "-m", "fifoflow", "monitor", "--interval", "0.3", "--queue", q),
            *("--max-dead", "1", "--max-queued", "0", "--max-age", "0", "--prefect-events"),
            env={"PREFECT_API_URL": str(prefect_api.api_url)},
            stdout=fo,
            stderr=fe,
        )

    def printed(text: str, n: int = 1) -> bool:
        assert mon.poll() is None, err.read_text()
        return sum(line.endswith(text) for line in out.read_text().splitlines()) >= n

    firing = f"firing dead: queue {q}: 2 dead jobs (threshold 1)"
    wait_for(lambda: printed(firing), timeout=90)
    (alert,) = wait_for(lambda: events(prefect_api, "fifoflow.alert.dead", resource), timeout=60)
    assert alert.resource["prefect.resource.name"] == q
    assert alert.payload == {
        "kind": "dead",
        "message": f"queue {q}: 2 dead jobs (threshold 1)",
        "queue": q,
        "pool": None,
        "worker": None,
        "host": None,
        "value": 2,
        "threshold": 1,
        "subject": f"queue {q}",
    }

    vqueue.purge_dead()
    wait_for(lambda: printed(f"resolved dead: queue {q}"), timeout=30)
    (resolved,) = wait_for(
        lambda: events(prefect_api, "fifoflow.resolved.dead", resource), timeout=60
    )
    assert resolved.payload["message"] == alert.payload["message"]
    assert resolved.occurred > alert.occurred

    # A second crossing. The Automation (loaded by the API within seconds of its
    # creation) acts on a crossing: its action's event names the alert that triggered it.
    make_dead(vqueue, 3)
    wait_for(lambda: printed(f"firing dead: queue {q}: 3 dead jobs (threshold 1)"), timeout=30)

    def both() -> list[Any] | None:
        got = events(prefect_api, "fifoflow.alert.dead", resource)
        return got if len(got) >= 2 else None

    alerts = wait_for(both, timeout=60)
    assert [e.payload["value"] for e in alerts] == [2, 3]
    executed = wait_for(
        lambda: events(
            prefect_api, "prefect.automation.action.executed", f"prefect.automation.{automation_id}"
        ),
        timeout=60,
    )
    triggering = {r.id for e in executed for r in e.related if r.role == "triggering-event"}
    assert triggering <= {f"prefect.event.{e.id}" for e in alerts} and triggering

    mon.send_signal(signal.SIGTERM)
    assert mon.wait(30) == 0, err.read_text()
    assert "warning" not in err.read_text()

    # --once (cron) sends an event per alert found, delivered before the process exits
    # (the API stores what it received within its flush interval).
    r = run_cli(
        *("monitor", "--once", "--queue", q, "--max-dead", "1", "--prefect-events"),
        env={"PREFECT_API_URL": str(prefect_api.api_url)},
        timeout=120,
    )
    assert (r.returncode, r.stdout) == (1, f"dead: queue {q}: 3 dead jobs (threshold 1)\n")
    wait_for(lambda: len(events(prefect_api, "fifoflow.alert.dead", resource)) == 3, timeout=60)
