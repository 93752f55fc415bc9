"""Parts of scripts/bench_proxy.py: the mock upstream, child processes, load, reporting."""

LOOPBACK = "127.0.0.1"
MODEL = "bench"
HOLD_MODEL = "bench-hold"  # the upstream sends one chunk, then waits for /control/release
UPSTREAM_KEY = "sk-mock-upstream"
