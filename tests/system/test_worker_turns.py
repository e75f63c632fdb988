"""The worker's queue, when full, gives its slots to the clients in turns, not to their
connections: a client with many connections cannot crowd out a client with one."""

import asyncio
from types import SimpleNamespace

from temposplit.server.worker import Item, Worker


def _served(conns: list, items_each: int) -> list:
    """Readers, one per connection in ``conns`` (each with a ``client``), each putting
    ``items_each`` items into a full one-slot queue that is drained one item at a time:
    the connections in the order their items were queued."""

    async def main():
        worker = Worker(models=None, log=print, on_closed=None, queue_size=1)
        worker.loop = asyncio.get_running_loop()
        worker.q.put_nowait(Item("skip", None))  # full

        async def reader(conn):
            for _ in range(items_each):
                await worker.put(Item("packet", None, conn))

        tasks = [asyncio.create_task(reader(c)) for c in conns]
        await asyncio.sleep(0)  # every reader is waiting
        served = []
        while not all(t.done() for t in tasks) or not worker.q.empty():
            item = worker.q.get_nowait()
            if item.conn is not None:
                served.append(item.conn)
            worker._grant()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        assert not worker._turns and not worker._waiters
        return served

    return asyncio.run(main())


def test_a_client_with_many_connections_gets_one_turn_a_round():
    conns = [SimpleNamespace(client="many") for _ in range(8)] + [SimpleNamespace(client="one")]
    served = [c.client for c in _served(conns, items_each=4)]
    assert served.count("many") == 32 and served.count("one") == 4
    # While both wait, they alternate: "one" is served within its first 8 slots
    # (with a turn per connection it would wait behind the 8 connections each time).
    assert served[:8].count("one") == 4, served


def test_each_clients_connections_take_turns_among_themselves():
    conns = [SimpleNamespace(client="c", n=k) for k in range(3)]
    assert [c.n for c in _served(conns, items_each=2)] == [0, 1, 2, 0, 1, 2]


def test_a_cancelled_waiter_leaves_no_turn_behind():
    async def main():
        worker = Worker(models=None, log=print, on_closed=None, queue_size=1)
        worker.loop = asyncio.get_running_loop()
        worker.q.put_nowait(Item("skip", None))
        waiting = asyncio.create_task(worker.put(Item("packet", None, SimpleNamespace(client="gone"))))
        await asyncio.sleep(0)
        assert list(worker._turns) == ["gone"]
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert not worker._turns and not worker._waiters

    asyncio.run(main())
