"""An hourly report, and a daily one to backfill.

``python hourly.py`` adds the schedule ``hourly-report`` to queue ``reports``: the target
``hourly:report`` pushed at minute 0 of every hour, Paris time, with the tick's time as
its ``hour`` parameter. Run it again and it says the schedule exists. Any worker started
with ``--scheduler`` fires it (start several: each tick still fires once)::

    cd examples/schedules
    python hourly.py
    fifoflow worker hourly --queue reports --scheduler

See README.md for the commands, a backfill of ``hourly:daily`` included.
"""

from __future__ import annotations

import time

from fifoflow import Queue, UsageError
from fifoflow.schedules import utc_text


def report(hour: str, region: str = "eu") -> str:
    """One hour's report; ``hour`` is the tick, e.g. 2026-10-01T14:00:00+02:00."""
    return f"report for {region} at {hour}"


def daily(date: str, region: str = "eu") -> str:
    """One day's report (the backfill's target); ``date`` is e.g. 2026-10-01."""
    return f"daily report for {region} on {date}"


def main() -> None:
    queue = Queue("reports")
    try:
        s = queue.schedules.add(
            "hourly-report",
            "hourly:report",
            {"region": "eu"},
            cron="0 * * * *",
            timezone="Europe/Paris",
            param="hour",
            catchup="last",  # after an outage: the newest missed hour only
        )
    except UsageError as e:  # it exists already
        print(e)
        return
    print(f"added {s.name}: {s.spec.when} ({s.spec.timezone})", end=", ")
    print(f"next tick {utc_text(s.next_tick(time.time()) or 0)}")


if __name__ == "__main__":
    main()
