"""The worker's queue, when full, gives its slots to the clients in turns, not to their
connections: a client with many connections cannot crowd out a client with one."""

import asyncio
from types import SimpleNamespace

from temposplit.server.worker import Item, Worker


def _order_of_service(connections: dict[str, int], items_each: int) -> list[str]:
    """Run readers (``connections[client]`` each, putting ``items_each`` items) against a
    full one-slot queue; drain it one item at a time; return the clients in queue order."""

    async def main():
        worker = Worker(models=None, log=print, on_closed=None, queue_size=1)
        worker.loop = asyncio.get_running_loop()
        worker.q.put_nowait(Item("skip", None))  # full

        async def reader(client):
            conn = SimpleNamespace(client=client)
            for _ in range(items_each):
                await worker.put(Item("packet", None, conn))

        tasks = [asyncio.create_task(reader(c)) for c, n in connections.items() for _ in range(n)]
        await asyncio.sleep(0)  # every reader is waiting
        served = []
        while not all(t.done() for t in tasks) or not worker.q.empty():
            item = worker.q.get_nowait()
            if item.conn is not None:
                served.append(item.conn.client)
            worker._grant()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        assert not worker._turns and not worker._waiters
        return served

    return asyncio.run(main())


def test_a_client_with_many_connections_gets_one_turn_a_round():
    served = _order_of_service({"many": 8, "one": 1}, items_each=4)
    assert served.count("many") == 32 and served.count("one") == 4
    # While both wait, they alternate: "one" is served within its first 8 slots
    # (with a turn per connection it would wait behind the 8 connections each time).
    first = served[:8]
    assert first.count("one") == 4, served


def test_each_clients_connections_take_turns_among_themselves():
    async def main():
        worker = Worker(models=None, log=print, on_closed=None, queue_size=1)
        worker.loop = asyncio.get_running_loop()
        worker.q.put_nowait(Item("skip", None))
        conns = [SimpleNamespace(client="c", n=k) for k in range(3)]

        async def reader(conn):
            for _ in range(2):
                await worker.put(Item("packet", None, conn))

        tasks = [asyncio.create_task(reader(c)) for c in conns]
        await asyncio.sleep(0)
        served = []
        while not all(t.done() for t in tasks) or not worker.q.empty():
            item = worker.q.get_nowait()
            if item.conn is not None:
                served.append(item.conn.n)
            worker._grant()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        return served

    assert asyncio.run(main()) == [0, 1, 2, 0, 1, 2]


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
