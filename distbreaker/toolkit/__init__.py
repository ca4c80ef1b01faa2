"""The resilience toolkit: pieces composed around `Breaker`, on top of the core (which never
imports them).

- `distbreaker.toolkit.retry`: predicates for tenacity and stamina that never retry a
  `CircuitOpenError`.
- `distbreaker.toolkit.failover`: `Failover` / `AsyncFailover`, providers each behind their own
  breaker.
- `distbreaker.toolkit.health`: `HealthChecker` / `AsyncHealthChecker`, a probe that closes a
  half-open breaker early.
- `distbreaker.toolkit.degradation`: `DegradationMonitor`, degradation levels from a set of
  breakers (and CPU / memory).
- `distbreaker.toolkit.httpx`: `BreakerTransport` / `AsyncBreakerTransport`, one breaker per host.

Importing this package imports none of them (httpx, tenacity and psutil stay optional). The
older paths (`distbreaker.failover` and so on) are aliases of these modules and keep working.
"""
