"""Prometheus text-format metrics, kept in plain counters (no extra dependency)."""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(_BUCKETS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(_BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        out = []
        running = 0
        sep = "," if labels else ""
        for bound, count in zip(_BUCKETS, self.counts, strict=False):
            running += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {running}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.n}')
        suffix = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{suffix} {self.total:.6f}")
        out.append(f"{name}_count{suffix} {self.n}")
        return out


class Metrics:
    """Requests by route and status, latencies, msat charged, open streams, and per
    provider: attempts, failed attempts, failovers away from it, its latency."""

    def __init__(self) -> None:
        self.requests: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.latency = Histogram()
        self.upstream_latency: defaultdict[str, Histogram] = defaultdict(Histogram)
        self.provider_attempts: defaultdict[str, int] = defaultdict(int)
        self.provider_failures: defaultdict[str, int] = defaultdict(int)
        self.provider_failovers: defaultdict[str, int] = defaultdict(int)
        self.charged_msat = 0
        self.open_streams = 0

    def request_done(self, route: str, status: int, seconds: float) -> None:
        self.requests[(route, status)] += 1
        self.latency.observe(seconds)

    def render(self) -> str:
        lines = [
            "# HELP routstr_requests_total Requests answered, by route and status.",
            "# TYPE routstr_requests_total counter",
        ]
        for (route, status), n in sorted(self.requests.items()):
            lines.append(f'routstr_requests_total{{route="{route}",status="{status}"}} {n}')
        lines += [
            "# HELP routstr_request_duration_seconds Time to answer a request.",
            "# TYPE routstr_request_duration_seconds histogram",
            *self.latency.lines("routstr_request_duration_seconds"),
            "# HELP routstr_upstream_duration_seconds Time until the upstream answered.",
            "# TYPE routstr_upstream_duration_seconds histogram",
        ]
        for name, hist in sorted(self.upstream_latency.items()):
            lines += hist.lines("routstr_upstream_duration_seconds", f'upstream="{name}"')
        for metric, counts, what in (
            ("routstr_provider_attempts_total", self.provider_attempts, "Attempts sent"),
            ("routstr_provider_failures_total", self.provider_failures, "Attempts that failed"),
            (
                "routstr_provider_failovers_total",
                self.provider_failovers,
                "Requests moved on to the next provider after this one failed",
            ),
        ):
            lines += [f"# HELP {metric} {what}, by provider.", f"# TYPE {metric} counter"]
            lines += [f'{metric}{{provider="{name}"}} {n}' for name, n in sorted(counts.items())]
        lines += [
            "# HELP routstr_charged_msat_total Millisatoshi charged for requests.",
            "# TYPE routstr_charged_msat_total counter",
            f"routstr_charged_msat_total {self.charged_msat}",
            "# HELP routstr_open_streams Streaming responses being relayed now.",
            "# TYPE routstr_open_streams gauge",
            f"routstr_open_streams {self.open_streams}",
        ]
        return "\n".join(lines) + "\n"
