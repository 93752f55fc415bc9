"""Parts of scripts/bench_proxy.py: the mock upstream, child processes, load, reporting."""

LOOPBACK = "127.0.0.1"
MODEL = "bench"
HOLD_MODEL = "bench-hold"  # the upstream sends one chunk, then waits for /control/release
UPSTREAM_KEY = "sk-mock-upstream"
ROUTED_MODEL = "bench-routed"  # sold through three providers (mock, mock2, mock3)
FAILOVER_MODEL = "bench-failover"  # its first provider answers 500, the second answers
FAIL_MODEL = "bench-fail"  # the upstream's name for which the mock answers 500 at once
SSE_MODEL = "bench-sse"  # 200 events, as OpenAI sends them ("usage": null on each chunk)
LONG_MODEL = "bench-long"  # 10,000 events, then waits for /control/release to end
SSE_EVENTS = 200
LONG_EVENTS = 10_000
