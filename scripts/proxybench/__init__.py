"""Parts of scripts/bench_proxy.py: the mock upstream, child processes, load, reporting."""

LOOPBACK = "127.0.0.1"
MODEL = "bench"
HOLD_MODEL = "bench-hold"  # the upstream sends one chunk, then waits for /control/release
UPSTREAM_KEY = "sk-mock-upstream"
ROUTED_MODEL = "bench-routed"  # sold through three providers (mock, mock2, mock3)
FAILOVER_MODEL = "bench-failover"  # its first provider answers 500, the second answers
FAIL_MODEL = "bench-fail"  # the upstream's name for which the mock answers 500 at once
