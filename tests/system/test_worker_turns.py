"""The worker's queue, when full, gives its slots to the clients by their share of the
worker's time, not to their connections: a client with many connections, or whose items
cost more, cannot crowd out a client with one (start-time fair queuing, docs/deployment.md)."""

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


def _served_by_cost(readers: list[tuple], cost: dict, alone: int = 0) -> list:
    """Readers ``(client, items)``, each putting its items into a full one-slot queue that
    is drained one item at a time, each item measured as taking ``cost[client]`` seconds of
    the worker (what :meth:`Worker._served` is told after a batch). With ``alone``, the
    first reader's client first queues that many items with the queue free (no one else
    waiting). Returns the clients in the order their items were served."""

    async def main():
        worker = Worker(models=None, log=print, on_closed=None, queue_size=1)
        worker.loop = asyncio.get_running_loop()

        def serve(item):
            client = item.conn.client if item.conn is not None else None
            worker._served([(client, cost.get(client, 0.0), item.charged)], item.start)

        first = SimpleNamespace(client=readers[0][0])
        for _ in range(alone):  # uncontended: queued at once, then served
            await worker.put(Item("packet", None, first))
            serve(worker.q.get_nowait())
        worker.q.put_nowait(Item("skip", None))  # full

        async def reader(client, items):
            conn = SimpleNamespace(client=client)
            for _ in range(items):
                await worker.put(Item("packet", None, conn))

        tasks = [asyncio.create_task(reader(c, n)) for c, n in readers]
        await asyncio.sleep(0)
        served = []
        while not all(t.done() for t in tasks) or not worker.q.empty():
            item = worker.q.get_nowait()
            if item.conn is not None:
                served.append(item.conn.client)
            serve(item)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        assert not worker._turns and not worker._waiters
        return served

    return asyncio.run(main())


def test_a_client_whose_items_cost_more_gets_fewer_slots_and_the_same_work_time():
    """Frames of 40 ms against frames of 10 ms: while both wait, the cheap client gets four
    slots for each of the costly one's, so each gets half the worker's time (in turns of
    items, the costly client took four fifths)."""
    cost = {"costly": 0.040, "cheap": 0.010}
    served = _served_by_cost([("costly", 40), ("cheap", 400)], cost)
    window = served[:100]  # both waiting throughout
    assert 0 < window.count("costly") < 40, served
    work = {c: window.count(c) * cost[c] for c in cost}
    assert abs(work["costly"] - work["cheap"]) <= 0.1, work  # within a few of the costly client's items
    assert 18 <= window.count("costly") <= 22, window.count("costly")  # 100 slots at 1:4, the first few on estimates


def test_a_client_idle_before_gets_no_credit_and_a_busy_one_no_debt():
    """A client that had the worker to itself for 200 items starts level with one that
    just arrived (the tags behind the virtual clock are dropped): neither waits long."""
    cost = {"early": 0.010, "late": 0.010}
    served = _served_by_cost([("early", 10), ("late", 10)], cost, alone=200)
    assert served[:4].count("early") == 2, served  # not starved for 200 items' worth
    assert served.count("early") == served.count("late") == 10
