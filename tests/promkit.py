"""Reading /metrics as Prometheus does: a real scrape, prometheus_client's exposition
parser, and the samples by name and labels."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


class Samples:
    """Every sample of one scrape: ``s.value(name, **labels)``, ``s.where(name, **labels)``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.rows: list[tuple[str, dict[str, str], float]] = []
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for s in family.samples:
                self.rows.append((s.name, dict(s.labels), float(s.value)))

    def where(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [
            (lab, v)
            for n, lab, v in self.rows
            if n == name and all(lab.get(k) == want for k, want in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        """The one sample of ``name`` with these labels (an error if none or several)."""
        rows = self.where(name, **labels)
        assert len(rows) == 1, f"{name}{labels}: {len(rows)} samples: {rows}"
        return rows[0][1]

    def by(self, name: str, label: str, **labels: str) -> dict[str, float]:
        """The samples of ``name`` with these labels, by the value of ``label``."""
        return {lab[label]: v for lab, v in self.where(name, **labels)}


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        assert r.headers.get("Content-Type", "").startswith("text/plain")
        return Samples(r.read().decode())


METRICS_LINE = re.compile(r"metrics on http://([\d.]+):(\d+)/metrics")


def metrics_address(log: Path) -> tuple[str, int] | None:
    """(host, port) from a worker's ``metrics on http://HOST:PORT/metrics`` log line."""
    m = METRICS_LINE.search(log.read_text()) if log.exists() else None
    return (m.group(1), int(m.group(2))) if m else None
