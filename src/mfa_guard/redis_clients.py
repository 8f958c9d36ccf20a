"""What the kit does to the redis-py clients it makes (the rate limits' storages, the token
sessions' store): one immediate retry on a broken connection, and ``ConnectionError`` for a
connection closed under a command. Imports redis-py only when called (the ``redis`` extra)."""

from __future__ import annotations

from typing import Any


def connection_retry() -> dict[str, Any]:
    """A redis-py client's keywords for one immediate retry on a broken connection: after a
    Redis restart the pooled connections are dead, and the first command should reconnect
    rather than fail the request. A Redis that is really down fails the retry too, and the
    request fails closed (redis-py's own default, ten retries backing off up to a second each,
    would hold it for seconds). A command that timed out is not run again: a Redis that does not
    answer would be waited for twice.

    Both keywords: redis-py 5 retries only the errors of ``retry_on_error`` (whatever the
    ``Retry`` says), and its cluster client adds ``TimeoutError`` to an empty list."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    return {
        "retry": Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
        "retry_on_error": [RedisConnectionError],
    }


def closed_connections_raise_connection_error(client: Any) -> None:
    """Makes the connections of a redis-py asyncio client (a ``Redis``, one of Sentinel's, or a
    ``RedisCluster``) raise ``ConnectionError`` for a command written to, or read from, a
    connection closed under it, where redis-py raises ``AttributeError`` or ``TypeError``.

    redis-py closes a connection while another task is using it: a ``RedisCluster`` closes every
    connection of its nodes on ``CLUSTERDOWN`` or too many ``MOVED`` (a master killed mid-traffic
    in tests/stores/test_redis_ha.py), and the task whose command was between its connection
    check and its write meets ``'NoneType' object has no attribute 'writelines'``; Python 3.12 to
    3.14.0 tear a transport's internals down on a reset from the peer, and the next write raises
    ``TypeError`` (redis/redis-py#4287). Neither is a ``RedisError``: past every retry and every
    ``except`` of redis-py and ``limits``, a request would end in a 500, where a connection
    that is gone is a store that is unavailable (a 503), or a retry on a new connection."""
    manager = getattr(client, "nodes_manager", None)
    if manager is None:
        pool = client.connection_pool
        pool.connection_class = _raising_connection_error(pool.connection_class)
        return
    # A cluster's nodes are made from the client's connection keywords (its nodes manager holds
    # the same dict), the nodes known already with their own class.
    kwargs = client.connection_kwargs
    kwargs["connection_class"] = _raising_connection_error(kwargs["connection_class"])
    for node in (*manager.startup_nodes.values(), *manager.nodes_cache.values()):
        node.connection_class = _raising_connection_error(node.connection_class)


_RAISING: dict[type[Any], type[Any]] = {}


def _raising_connection_error(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` (redis-py's ``Connection``, ``SSLConnection``, Sentinel's …) whose
    writes and reads raise ``ConnectionError`` for what a closed connection raises instead."""
    if getattr(connection_class, "_mfa_guard_raises_connection_error", False):
        return connection_class
    if connection_class in _RAISING:
        return _RAISING[connection_class]
    from redis.exceptions import ConnectionError as RedisConnectionError

    def closed(exc: Exception) -> RedisConnectionError:
        return RedisConnectionError(f"the connection was closed under the command ({exc})")

    async def send_packed_command(self: Any, *args: Any, **kwargs: Any) -> None:
        # The command is packed already: only the write to the transport runs here.
        try:
            await connection_class.send_packed_command(self, *args, **kwargs)
        except (AttributeError, TypeError) as exc:
            raise closed(exc) from exc

    async def read_response(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await connection_class.read_response(self, *args, **kwargs)
        except (AttributeError, TypeError) as exc:
            raise closed(exc) from exc

    raising = type(
        connection_class.__name__,
        (connection_class,),
        {
            "__module__": __name__,
            "__qualname__": connection_class.__qualname__,
            "_mfa_guard_raises_connection_error": True,
            "send_packed_command": send_packed_command,
            "read_response": read_response,
        },
    )
    _RAISING[connection_class] = raising
    return raising
