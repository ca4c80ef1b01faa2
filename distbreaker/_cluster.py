"""Redis Cluster and Sentinel clients tuned for breaker budgets, and the eviction-policy check.

`connect_cluster` and `connect_sentinel` follow `connect`'s rules: every command is bounded by
`timeout`, and the client never retries on its own (the breaker backs off instead), so a hung
node costs a protected call about one budget, not a multiple of it.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._connect import client_options
from ._log import LIMITED
from ._transport import ainit
from .errors import ConfigError, redact

__all__ = [
    "REDIRECTS",
    "ainit",
    "check_eviction",
    "cluster_options",
    "connect_cluster",
    "connect_sentinel",
    "eviction_warning",
]

# Attempts of one command across MOVED/ASK/TRYAGAIN replies (redis-py's default is 16, with a
# 50 ms pause per TRYAGAIN in the second half). A slot moved by a resharding costs one MOVED
# (the client patches its slot table) or one ASK (+ ASKING); a TRYAGAIN (a multi-key script on
# a slot being migrated, some of its keys missing) costs at most one 50 ms pause, then counts
# as Redis unavailable (the breaker backs off).
REDIRECTS = 2


def cluster_options(url: str, timeout: float, *, asyncio: bool = False) -> dict[str, Any]:
    """Options for `redis.cluster.RedisCluster` (sync or asyncio) bounded by `timeout`."""
    options = client_options(url, timeout, asyncio=asyncio)
    options.pop("timeout")  # the cluster client's per-node pools do not block
    options.pop("max_connections")
    options["retry"] = (AsyncRetry if asyncio else Retry)(
        NoBackoff(), 0
    )  # no whole-command retry (cluster_error_retry_attempts)
    return options


def _ttl(client: Any) -> Any:
    client.RedisClusterRequestTTL = REDIRECTS  # an instance attribute: only this client
    return client


def connect_cluster(url: str | Sequence[tuple[str, int]], *, timeout: float = 0.05, **kwargs: Any) -> Any:
    """A `redis.cluster.RedisCluster` whose every command is bounded by `timeout` seconds.

    Each breaker's keys share the ``{service}`` hash tag, so every script touches one slot;
    `Admin.list` scans every primary. MOVED and ASK during a resharding are followed at most
    `REDIRECTS` times within the command; CLUSTERDOWN, TRYAGAIN and a dead node count as Redis
    unavailable (the breaker's `on_redis_error` policy, then backoff). No whole-command retries.

    Args:
        url: ``redis://host:port`` of any node, or a list of ``(host, port)`` startup nodes.
        timeout: connect and read timeout per command, seconds. Default 0.05.
        **kwargs: passed to `RedisCluster`.
    """
    from redis.cluster import ClusterNode, RedisCluster

    options = cluster_options(url if isinstance(url, str) else "redis://cluster", timeout)
    options.update(kwargs)
    try:
        if isinstance(url, str):
            return _ttl(RedisCluster.from_url(url, **options))
        nodes = [ClusterNode(host, int(port)) for host, port in url]  # type: ignore[no-untyped-call]
        return _ttl(RedisCluster(startup_nodes=nodes, **options))
    except ValueError as exc:
        raise ConfigError("url", redact(str(exc))) from None


def connect_sentinel(
    sentinels: Iterable[tuple[str, int]],
    service_name: str,
    *,
    timeout: float = 0.05,
    sentinel_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """A `redis.Redis` to the master `service_name` of a Sentinel set, bounded by `timeout`.

    The client asks the sentinels for the master on each new connection, so after a failover
    the next connection goes to the new master; the scripts are reloaded there by the
    EVALSHA → NOSCRIPT → EVAL fallback. Writes the old master acknowledged but had not yet
    replicated are lost with it (see the docs, "Redis Cluster and Sentinel").

    Args:
        sentinels: ``(host, port)`` of the sentinels.
        service_name: the monitored master's name.
        timeout: connect and read timeout per command, seconds (also used for the sentinels).
        sentinel_kwargs: options for the connections to the sentinels (password, ...).
        **kwargs: options for the connections to the master (password, username, db, ...).
    """
    from redis.sentinel import Sentinel

    options = client_options("redis://sentinel", timeout)
    options.pop("timeout")
    options.pop("max_connections")
    to_sentinels = {
        "socket_timeout": options["socket_timeout"],
        "socket_connect_timeout": options["socket_connect_timeout"],
        "retry": Retry(NoBackoff(), 0),
        **(sentinel_kwargs or {}),
    }
    options.update(kwargs)
    sentinel = Sentinel(list(sentinels), sentinel_kwargs=to_sentinels, **options)  # type: ignore[no-untyped-call, unused-ignore]
    return sentinel.master_for(service_name)  # type: ignore[no-untyped-call, unused-ignore]


# -- eviction policy -----------------------------------------------------------------------------
_checked: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()  # client -> pid checked
_checked_lock = threading.Lock()


def _first_check(client: Any) -> bool:
    """True once per client and process."""
    pid = os.getpid()
    with _checked_lock:
        try:
            if _checked.get(client) == pid:
                return False
            _checked[client] = pid
        except TypeError:  # not weak-referenceable: check it every time a listener starts
            pass
    return True


def _policies(reply: Any) -> list[str]:
    """`maxmemory-policy` values of a CONFIG GET reply (a cluster client may answer per node)."""

    def one(r: Any) -> str | None:
        if isinstance(r, dict):
            v = r.get("maxmemory-policy", r.get(b"maxmemory-policy"))
        elif isinstance(r, (list, tuple)) and len(r) >= 2:
            v = r[1]
        else:
            return None
        return v.decode() if isinstance(v, bytes) else (None if v is None else str(v))

    if isinstance(reply, dict) and reply and "maxmemory-policy" not in reply and b"maxmemory-policy" not in reply:
        found = [one(v) for v in reply.values()]  # {node: reply}
    else:
        found = [one(reply)]
    return [p for p in found if p]


def eviction_warning(policies: Sequence[str]) -> str | None:
    """The warning for these policies, or None when every one keeps breaker keys."""
    bad = sorted({p for p in policies if p != "noeviction"})
    if not bad:
        return None
    return (
        f"Redis maxmemory-policy is {', '.join(bad)}: under memory pressure it can delete breaker keys "
        "(they carry a TTL, so volatile-* policies evict them too); an evicted breaker restarts closed "
        "with empty counts. Use maxmemory-policy noeviction (or a dedicated Redis) for distbreaker."
    )


def check_eviction(client: Any) -> None:
    """Warn once per client and process when the server may evict breaker keys (sync client).
    Errors (NOPERM on CONFIG, Redis down) are ignored: `distbreaker doctor` reports them."""
    if not _first_check(client):
        return
    try:
        reply = client.execute_command("CONFIG", "GET", "maxmemory-policy")
    except Exception:
        return
    _warn(client, reply)


async def acheck_eviction(client: Any) -> None:
    """`check_eviction` for an asyncio client."""
    if not _first_check(client):
        return
    try:
        reply = await client.execute_command("CONFIG", "GET", "maxmemory-policy")
    except Exception:
        return
    _warn(client, reply)


def _warn(client: Any, reply: Any) -> None:
    message = eviction_warning(_policies(reply))
    if message is not None:  # once per client (the key also bounds a process making many clients)
        LIMITED.log(logging.WARNING, ("eviction-policy", id(client)), "%s", message, burst=1)
