"""Real Redis topologies for the tests, each in a temporary directory of its own: a Redis Cluster
(three masters with a replica each) and a Sentinel set-up (a master, a replica, three sentinels).

Every server is the machine's ``redis-server`` on free local ports, without persistence, its
timeouts short so that a failover takes seconds. ``kill`` is a crash (SIGKILL): the process
answers nothing more and writes nothing to disk. Every wait on the servers has a deadline.

A missing ``redis-server`` or ``redis-cli`` is a skip on a developer's machine and a failure when
``CI=true``, where these tests must run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

# A server answers within seconds of starting; a failover within FAILOVER_TIMEOUT of a crash
# (the cluster's node timeout or the sentinels' down-after, then an election).
START_TIMEOUT = 15.0
HEALTHY_TIMEOUT = 30.0
FAILOVER_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.05
# How soon a silent node is taken for dead, in milliseconds: short, so that a failover takes
# seconds; long enough that two busy cores do not make a live node look dead.
NODE_TIMEOUT_MS = 1500
SERVICE = "mfa-guard-test"
# No persistence; a replica's full sync starts at once (Redis waits 5 s for more replicas).
DATA_NODE = ("--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0")


def unavailable(reason: str) -> NoReturn:
    """A skip on a developer's machine without the tools; a failure in CI, where they must run."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the Redis Cluster and Sentinel tests must run)")
    pytest.skip(reason)


def executable(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        unavailable(f"{name} is not installed (apt-get install redis-server redis-tools)")
    return found


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free now (held open together while they are picked)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    return ports


async def until(condition: Callable[[], Awaitable[bool]], what: str, within: float) -> float:
    """Polls ``condition`` until it holds; how long it took. Fails the test past ``within``
    seconds."""
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > within:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL)
    return time.monotonic() - started


class Server:
    """One ``redis-server`` process (a data node or a sentinel) on its own port and directory."""

    def __init__(self, name: str, port: int, directory: Path, args: list[str]) -> None:
        self.name = name
        self.port = port
        self.directory = directory
        self.args = args
        self._process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def spawn(self, *extra: str) -> None:
        with (self.directory / "server.log").open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 (the machine's own redis-server)
                [executable("redis-server"), *self.args, *extra],
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def ready(self) -> None:
        async def answers() -> bool:
            if self._process is not None and self._process.poll() is not None:
                pytest.fail(f"{self.name} exited with {self._process.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError, ConnectionError, TimeoutError):
                return await self.command("PING") is True
            return False

        await until(answers, f"{self.name} to answer", START_TIMEOUT)

    def kill(self) -> None:
        """A crash: SIGKILL, nothing flushed, every connection reset by the system."""
        process, self._process = self._process, None
        if process is not None:
            process.send_signal(signal.SIGKILL)
            process.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    async def command(self, *args: Any) -> Any:
        """One command on a connection of its own, closed after (a second at most)."""
        client = Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=1,
            socket_connect_timeout=1,
            decode_responses=True,
        )
        try:
            return await client.execute_command(*args)  # type: ignore[no-untyped-call]
        finally:
            await client.aclose()

    async def replica_read(self, key: str) -> Any:
        """``GET key`` on a cluster replica, which redirects reads unless asked first."""
        client = Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=1,
            socket_connect_timeout=1,
            decode_responses=True,
            single_connection_client=True,
        )
        try:
            await client.execute_command("READONLY")  # type: ignore[no-untyped-call]
            return await client.execute_command("GET", key)  # type: ignore[no-untyped-call]
        finally:
            await client.aclose()

    async def info(self, section: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self.command("INFO", section)
        return answer

    def log(self) -> str:
        return (self.directory / "server.log").read_text("utf-8", "replace")[-3000:]


async def _in_sync(server: Server, replicas: int) -> bool:
    """A master with ``replicas`` replicas streaming from it (not still loading its data: a
    replica that just came back syncs in full, and what its master takes meanwhile is lost if the
    master dies then), or a replica whose link to its master is up."""
    replication = await _answers(server, "INFO", "replication")
    if not isinstance(replication, dict):
        return False
    if replication["role"] == "slave":
        return bool(
            replication.get("master_link_status") == "up"
            and not int(replication.get("master_sync_in_progress", 1))
        )
    streaming = [
        replication.get(f"slave{n}", {}).get("state") == "online"
        for n in range(int(replication["connected_slaves"]))
    ]
    return len(streaming) == replicas and all(streaming)


async def _streaming(
    master: Server, replicas: list[Server], probe: str, *, cluster: bool = False
) -> bool:
    """Whether a write on ``master`` reaches every replica (within a second and a half). A
    replica that has just loaded its copy is reported ``online`` before its master streams to
    it: that starts on the replica's next acknowledgement, up to a second later, and what the
    master takes until then is lost if it dies meanwhile."""
    written = await _answers(master, "INCR", probe)
    if not isinstance(written, int):
        return False

    async def received() -> bool:
        for replica in replicas:
            try:
                seen = await (
                    replica.replica_read(probe) if cluster else replica.command("GET", probe)
                )
            except Exception:  # down, starting, refusing: no answer
                return False
            if seen is None or int(seen) < written:
                return False
        return True

    started = time.monotonic()
    while not await received():
        if time.monotonic() - started > 1.5:
            return False
        await asyncio.sleep(POLL_INTERVAL)
    return True


async def _answers(server: Server, *args: Any) -> Any:
    """The server's answer, or ``None`` if it gives none (down, starting, refusing)."""
    try:
        return await server.command(*args)
    except Exception:  # down, starting, refusing: no answer
        return None


class Topology:
    """What the tests do with either topology: find the master holding a key, crash it, wait for
    a replica to take over, bring the crashed server back as a replica."""

    masters = 1

    @property
    def uri(self) -> str:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    async def master_for(self, key: str) -> Server:
        """The master that holds ``key`` now."""
        raise NotImplementedError

    async def failed_over(self, dead: Server, key: str) -> Server:
        """Waits (up to :data:`FAILOVER_TIMEOUT`) until a replica of ``dead`` has taken over
        ``key`` and takes writes; the new master."""
        raise NotImplementedError

    async def restore(self, server: Server) -> None:
        """Brings a crashed server back, empty, as a replica, and waits until the topology is
        whole again."""
        raise NotImplementedError

    def failover_held(self, master: Server) -> contextlib.AbstractAsyncContextManager[None]:
        """No replica of ``master`` takes over inside the block (so an outage lasts as long as
        the test needs); after it, the failover goes ahead."""
        raise NotImplementedError


# -- Redis Cluster ----------------------------------------------------------------------------


class Cluster(Topology):
    """Three masters and a replica each (``redis-cli --cluster create``), node timeout
    :data:`NODE_TIMEOUT_MS`. With the default ``cluster-require-full-coverage yes``: while a
    master is down and none of its replicas has taken over, keyed commands fail on every node."""

    def __init__(self, directory: Path, masters: int = 3, replicas: int = 1) -> None:
        count = masters * (1 + replicas)
        ports = free_ports(2 * count)
        self.masters = masters
        self.replicas = replicas
        self.nodes = [
            Server(
                f"cluster node {port}",
                port,
                directory / f"node-{port}",
                [
                    *("--port", str(port), "--bind", "127.0.0.1"),
                    *("--cluster-enabled", "yes", "--cluster-port", str(bus)),
                    *("--cluster-config-file", "nodes.conf"),
                    *("--cluster-node-timeout", str(NODE_TIMEOUT_MS)),
                    *DATA_NODE,
                ],
            )
            for port, bus in zip(ports[:count], ports[count:], strict=True)
        ]

    @property
    def uri(self) -> str:
        """``MFA_GUARD_STORAGE_URI`` for this cluster: every node as a start-up node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    async def start(self) -> None:
        for node in self.nodes:
            node.spawn()
        for node in self.nodes:
            await node.ready()
        created = await asyncio.to_thread(
            subprocess.run,
            [
                executable("redis-cli"),
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                *("--cluster-replicas", str(self.replicas), "--cluster-yes"),
            ],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT * 2,
            check=False,
        )
        if created.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed:\n{created.stdout}{created.stderr}")
        await self.healthy()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    async def healthy(self) -> float:
        """Waits until every node is up and agrees: all slots served, every master with its
        replicas connected and in sync. How long it took."""
        return await until(self._healthy, "the cluster to be whole", HEALTHY_TIMEOUT)

    async def _healthy(self) -> bool:
        if not all(node.alive for node in self.nodes):
            return False
        for node in self.nodes:
            info = await _answers(node, "CLUSTER INFO")
            if not isinstance(info, dict):
                return False
            if info.get("cluster_state") != "ok" or int(info["cluster_slots_ok"]) != 16384:
                return False
            if int(info["cluster_known_nodes"]) != len(self.nodes):
                return False
            if int(info["cluster_slots_pfail"]) or int(info["cluster_slots_fail"]):
                return False
        views = await _answers(self.nodes[0], "CLUSTER NODES")
        if not isinstance(views, dict):
            return False
        masters = [address for address, view in views.items() if "master" in view["flags"]]
        if len(masters) * (1 + self.replicas) != len(self.nodes):
            return False
        for view in views.values():
            if "fail" in view["flags"] or not view["connected"]:
                return False
        for node in self.nodes:
            if not await _in_sync(node, self.replicas):
                return False
        for address, view in views.items():
            if "master" in view["flags"]:
                master = self._node(int(address.rsplit(":", 1)[1]))
                replicas = await self.replicas_of(master)
                probe = self._probe(view["slots"])
                if not await _streaming(master, replicas, probe, cluster=True):
                    return False
        return True

    @staticmethod
    def _probe(slots: list[list[str]]) -> str:
        """A key of one of ``slots`` (ranges, as CLUSTER NODES gives them)."""
        first = int(slots[0][0])
        last = int(slots[0][-1])
        return next(
            key
            for n in itertools.count()
            if first <= key_slot((key := f"mfa-guard-test-probe-{n}").encode()) <= last
        )

    async def master_of(self, slot: int) -> Server:
        """The node that serves ``slot`` now, as a live node sees the cluster."""
        for node in self.nodes:
            if not node.alive:
                continue
            slots = await _answers(node, "CLUSTER SLOTS")
            if not isinstance(slots, list):
                continue
            for start, end, master, *_ in slots:
                if start <= slot <= end:
                    return self._node(int(master[1]))
        pytest.fail(f"no live node knows who serves slot {slot}")

    async def master_for(self, key: str) -> Server:
        return await self.master_of(key_slot(key.encode()))

    async def replicas_of(self, master: Server) -> list[Server]:
        """The replicas connected to ``master`` now."""
        replication = await master.info("replication")
        return [
            self._node(int(replication[f"slave{n}"]["port"]))
            for n in range(int(replication["connected_slaves"]))
        ]

    async def failed_over(self, dead: Server, key: str) -> Server:
        slot = key_slot(key.encode())

        async def taken_over() -> bool:
            for node in self.nodes:
                if not node.alive:
                    continue
                info = await _answers(node, "CLUSTER INFO")
                if not isinstance(info, dict) or info.get("cluster_state") != "ok":
                    return False
            master = await self.master_of(slot)
            role = await _answers(master, "ROLE")
            return master is not dead and isinstance(role, list) and role[0] == "master"

        await until(taken_over, f"a replica to take over slot {slot}", FAILOVER_TIMEOUT)
        return await self.master_of(slot)

    @contextlib.asynccontextmanager
    async def failover_held(self, master: Server) -> AsyncIterator[None]:
        replicas = await self.replicas_of(master)
        for replica in replicas:
            await replica.command("CONFIG SET", "cluster-replica-no-failover", "yes")
        try:
            yield
        finally:
            for replica in replicas:
                await replica.command("CONFIG SET", "cluster-replica-no-failover", "no")

    async def restore(self, server: Server) -> None:
        # Its nodes.conf brings it back into the cluster, where it finds its slots taken by a
        # newer epoch and becomes a replica of the node that took them.
        server.spawn()
        await server.ready()
        await self.healthy()

    def _node(self, port: int) -> Server:
        return next(node for node in self.nodes if node.port == port)


# -- Sentinel ---------------------------------------------------------------------------------


class Sentinels(Topology):
    """A master, a replica and three sentinels watching them as :data:`SERVICE` (quorum 2,
    ``down-after-milliseconds`` :data:`NODE_TIMEOUT_MS`)."""

    def __init__(self, directory: Path, sentinels: int = 3, quorum: int = 2) -> None:
        master_port, replica_port, *sentinel_ports = free_ports(2 + sentinels)
        self.quorum = quorum
        self.data = [
            Server(
                f"sentinel data node {port}",
                port,
                directory / f"data-{port}",
                ["--port", str(port), "--bind", "127.0.0.1", *DATA_NODE],
            )
            for port in (master_port, replica_port)
        ]
        self.sentinels = [
            Server(
                f"sentinel {port}",
                port,
                directory / f"sentinel-{port}",
                ["sentinel.conf", "--sentinel"],
            )
            for port in sentinel_ports
        ]
        self._first_master = master_port

    @property
    def uri(self) -> str:
        """``MFA_GUARD_STORAGE_URI`` for this set-up: the sentinels, then the service name."""
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    async def start(self) -> None:
        master, replica = self.data
        master.spawn()
        await master.ready()
        replica.spawn("--replicaof", "127.0.0.1", str(master.port))
        await replica.ready()
        for sentinel in self.sentinels:
            # A sentinel rewrites its configuration file: one of its own, in its directory.
            (sentinel.directory / "sentinel.conf").write_text(
                "\n".join(
                    [
                        f"port {sentinel.port}",
                        "bind 127.0.0.1",
                        f"dir {sentinel.directory}",
                        f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} {self.quorum}",
                        f"sentinel down-after-milliseconds {SERVICE} {NODE_TIMEOUT_MS}",
                        f"sentinel failover-timeout {SERVICE} 3000",
                        f"sentinel parallel-syncs {SERVICE} 1",
                        "",
                    ]
                )
            )
            sentinel.spawn()
        for sentinel in self.sentinels:
            await sentinel.ready()
        await self.healthy()

    def stop(self) -> None:
        for server in (*self.sentinels, *self.data):
            server.stop()

    async def master(self) -> Server:
        """The master the sentinels name now (the first sentinel that answers)."""
        for sentinel in self.sentinels:
            address = await _answers(sentinel, "SENTINEL GET-MASTER-ADDR-BY-NAME", SERVICE)
            if address:
                return self._server(int(address[1]))
        pytest.fail("no sentinel names a master")

    async def healthy(self) -> float:
        """Waits until every server is up, every sentinel names the same master, knows its
        replica and the other sentinels, and the replica is in sync. How long it took."""
        return await until(self._healthy, "the sentinels to agree", HEALTHY_TIMEOUT)

    async def _healthy(self) -> bool:
        if not all(server.alive for server in (*self.data, *self.sentinels)):
            return False
        named = set()
        for sentinel in self.sentinels:
            state = await _answers(sentinel, "SENTINEL MASTER", SERVICE)
            if not isinstance(state, dict) or state.get("flags") != "master":
                return False
            if int(state["num-slaves"]) != len(self.data) - 1:
                return False
            if int(state["num-other-sentinels"]) != len(self.sentinels) - 1:
                return False
            replicas = await _answers(sentinel, "SENTINEL SLAVES", SERVICE)
            if not isinstance(replicas, list) or any(
                replica["flags"] != "slave" or replica["master-link-status"] != "ok"
                for replica in replicas
            ):
                return False
            named.add(int(state["port"]))
        if len(named) != 1:
            return False
        master = self._server(named.pop())
        for server in self.data:
            role = await _answers(server, "ROLE")
            if not isinstance(role, list):
                return False
            if server is master:
                if role[0] != "master":
                    return False
            elif role[0] != "slave" or role[1:4] != ["127.0.0.1", master.port, "connected"]:
                return False
            if not await _in_sync(server, len(self.data) - 1):
                return False
        replicas = [server for server in self.data if server is not master]
        return await _streaming(master, replicas, "mfa-guard-test-probe")

    async def master_for(self, key: str) -> Server:
        return await self.master()

    async def failed_over(self, dead: Server, key: str) -> Server:
        async def promoted() -> bool:
            ports = set()
            for sentinel in self.sentinels:
                address = await _answers(sentinel, "SENTINEL GET-MASTER-ADDR-BY-NAME", SERVICE)
                if not address:
                    return False
                ports.add(int(address[1]))
            if len(ports) != 1 or dead.port in ports:
                return False
            role = await _answers(self._server(ports.pop()), "ROLE")
            return isinstance(role, list) and role[0] == "master"

        await until(promoted, "a sentinel failover", FAILOVER_TIMEOUT)
        return await self.master()

    @contextlib.asynccontextmanager
    async def failover_held(self, master: Server) -> AsyncIterator[None]:
        # A quorum no set of these sentinels reaches: the master is never agreed to be down.
        for sentinel in self.sentinels:
            await sentinel.command("SENTINEL SET", SERVICE, "quorum", len(self.sentinels) + 1)
        try:
            yield
        finally:
            for sentinel in self.sentinels:
                await sentinel.command("SENTINEL SET", SERVICE, "quorum", self.quorum)

    async def restore(self, server: Server) -> None:
        # Back as a replica of the master of now, as the sentinels would turn it into one.
        master = await self.master()
        if master is server:  # not failed over yet (a test that stopped half-way)
            master = await self.failed_over(server, SERVICE)
        server.spawn("--replicaof", "127.0.0.1", str(master.port))
        await server.ready()
        await self.healthy()

    def _server(self, port: int) -> Server:
        return next(server for server in self.data if server.port == port)


@contextlib.contextmanager
def running(topology: Topology) -> Iterator[None]:
    """The topology started, and stopped after (for a fixture outside any event loop)."""
    try:
        asyncio.run(topology.start())
        yield
    finally:
        topology.stop()
