"""An etcd member cut off from etcd gives up the connections the cut
stranded, so it hears etcd again as soon as the cut heals (issue 10).

An 8 s cut of a coordinator on etcd left it serving again only 5.7-6.2 s
after the heal. Its etcd channels had no keepalive: the connection that was
in use when the cut began stayed open through the cut, and what either side
sent meanwhile waited after the heal for TCP's next retransmission, backed
off to seconds by then (the member learnt the new leader from its Observe
stream only when etcd's retransmission came through). Now a ping unanswered
for a second closes the connection during the cut and the channel redials.

A member process in its own cgroup (:class:`bench._nemesis_net.Cut`), a
second member outside it that takes over during the cut; needs root, nft and
cgroup2 (skipped otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import pytest

from bench._nemesis_net import Cut, _sockets, unavailable
from praxis_grpc.config import EtcdConfig
from praxis_grpc.consensus.etcd import EtcdConsensus
from praxis_grpc.testing.etcd_cluster import EtcdCluster, find_etcd
from tests.integration.helpers import until

pytestmark = pytest.mark.nemesis

# Starts once it was moved into its cgroup (a line on stdin); prints every
# leader it learns ("<agent id> <term>", "- <term>" for none).
MEMBER = """
import asyncio, sys
from praxis_grpc.config import EtcdConfig
from praxis_grpc.consensus.etcd import EtcdConsensus

async def main():
    sys.stdin.readline()
    member = EtcdConsensus(
        EtcdConfig(endpoints=sys.argv[1].split(","), lease_ttl=2),
        agent_id="victim",
        grpc_address="127.0.0.1:1",
    )
    await member.start()
    async for leadership in member.watch():
        print(leadership.leader_id or "-", leadership.term, flush=True)

asyncio.run(main())
"""


@pytest.fixture
async def cluster() -> AsyncIterator[EtcdCluster]:
    if why := unavailable():
        pytest.skip(f"cannot cut a process off: {why}")
    if find_etcd() is None:
        pytest.skip("etcd binary not found")
    etcd = EtcdCluster(3)
    await asyncio.to_thread(etcd.start)
    try:
        yield etcd
    finally:
        await asyncio.to_thread(etcd.close)


async def test_a_cut_member_drops_its_stranded_etcd_connections(cluster: EtcdCluster) -> None:
    cut = Cut(uuid.uuid4().hex[:8])
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        MEMBER,
        ",".join(cluster.endpoints),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    other: EtcdConsensus | None = None
    leaders: list[tuple[str, int]] = []

    async def read() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            name, term = line.decode().split()
            leaders.append((name, int(term)))

    reader = asyncio.create_task(read())
    try:
        assert process.stdin is not None
        cut.adopt("victim", process.pid)
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        await until(lambda: any(name == "victim" for name, _ in leaders), timeout=30)
        other = EtcdConsensus(
            EtcdConfig(endpoints=cluster.endpoints, lease_ttl=2),
            agent_id="other",
            grpc_address="127.0.0.1:2",
        )
        await other.start()

        cut.isolate("victim", process.pid)
        stranded = set(await asyncio.to_thread(_sockets, process.pid))
        assert stranded  # its etcd connection(s)
        # The other member takes over once the victim's lease expires.
        await until(lambda: other is not None and other.leadership().is_self, timeout=30)

        # Before the fix they stayed open for minutes (TCP's retries).
        async with asyncio.timeout(20):
            while stranded & set(await asyncio.to_thread(_sockets, process.pid)):
                await asyncio.sleep(0.1)
        assert cut.leaks() == []
        cut.heal()
        term = other.leadership().term
        await until(lambda: ("other", term) in leaders, timeout=30)
    finally:
        reader.cancel()
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        await asyncio.gather(reader, return_exceptions=True)
        if other is not None:
            await other.aclose()
        cut.close()
