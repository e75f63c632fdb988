"""The worker's queue shares the worker's time among the clients (start-time fair queuing,
docs/deployment.md, "The worker's time, shared by cost"): a client with many connections,
or whose items cost more, cannot crowd out a client with one; a session's items still run
in the order they came.

The tests drive the real queue (put, _grant, _take, _served) on one event loop, with no
model: each batch the worker would run is taken at once, every reader having queued what
its share allows, and charged a fixed cost per item of each client."""

import asyncio
from types import SimpleNamespace

from temposplit.server.worker import Item, Worker


async def _settle() -> None:
    for _ in range(8):  # every reader granted a slot puts, and waits again
        await asyncio.sleep(0)


def _serve(readers: list[tuple], cost: dict, batches: int, queue_size=32, max_batch=16) -> list:
    """Readers ``(client, connections)``: each connection puts packets without end. Takes
    ``batches`` batches, charging each item ``cost[client]`` seconds; returns the clients
    of the items in the order taken."""

    async def main():
        worker = Worker(models=None, log=print, on_closed=None, queue_size=queue_size, max_batch=max_batch)
        worker.max_delay = 0
        worker.loop = asyncio.get_running_loop()

        async def reader(conn):
            while True:
                await worker.put(Item("packet", conn.session, conn))

        conns = [
            SimpleNamespace(client=client, session=(client, k)) for client, n in readers for k in range(n)
        ]  # a stream per connection
        tasks = [asyncio.create_task(reader(c)) for c in conns]
        taken = []
        for _ in range(batches):
            await _settle()
            batch = worker._take()
            taken += [item.conn.client for item in batch]
            worker._served([(item.charged_to, cost[item.charged_to], item.charged) for item in batch])
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return taken

    return asyncio.run(main())


def test_a_client_with_one_connection_gets_the_work_time_of_one_with_sixteen():
    """Sixteen connections against one, at the server's defaults: the worker took a batch
    of 16 at once, the slots it freed went to whoever waited, and the single connection got
    one item a batch (7 % of the worker, measured before the per-client shares)."""
    taken = _serve([("many", 16), ("one", 1)], {"many": 0.004, "one": 0.004}, batches=20)
    assert len(taken) == 320
    assert 150 <= taken.count("one") <= 170, taken.count("one")


def test_a_client_whose_items_cost_more_gets_fewer_of_them_and_the_same_work_time():
    """Frames of 40 ms against frames of 10 ms: the cheap client gets four items for each
    of the costly one's, each half the worker's time (by items, the costly one took four
    fifths)."""
    cost = {"costly": 0.040, "cheap": 0.010}
    taken = _serve([("costly", 4), ("cheap", 4)], cost, batches=20)
    work = {c: taken.count(c) * cost[c] for c in cost}
    assert abs(work["costly"] - work["cheap"]) <= 0.2, work  # within a few of the costly client's items
    assert 3.0 <= taken.count("cheap") / taken.count("costly") <= 5.0, work


def test_a_client_idle_before_gets_no_credit_and_a_busy_one_no_debt():
    """A client that had the worker to itself for 200 items starts level with one that just
    arrived (the tags behind the virtual clock are dropped): neither waits long."""

    async def main():
        worker = Worker(models=None, log=print, on_closed=None, queue_size=4, max_batch=1)
        worker.max_delay = 0
        worker.loop = asyncio.get_running_loop()
        early, late = SimpleNamespace(client="early"), SimpleNamespace(client="late")
        for _ in range(200):  # alone: queued at once, taken, charged
            await worker.put(Item("packet", "e", early))
            item = worker._take()[0]
            worker._served([(item.charged_to, 0.010, item.charged)])
        for _ in range(2):  # a share each: 4 // 2
            await worker.put(Item("packet", "e", early))
            await worker.put(Item("packet", "l", late))
        taken = []
        while worker.queued():
            item = worker._take()[0]
            taken.append(item.conn.client)
            worker._served([(item.charged_to, 0.010, item.charged)])
        return taken

    taken = asyncio.run(main())
    assert taken[:2].count("early") == 1, taken  # not starved for 200 items' worth, nor favoured


def test_the_servers_own_close_runs_in_the_next_batch_beside_a_flood():
    """A session's close (an item of the server's own) beside two clients of 16 connections
    each: it is taken first in the next batch, not after a batch of each (it waited 75 ms
    a close behind 16 frames of 4 ms, each close of an expiring set in turn)."""

    async def main():
        worker = Worker(models=None, log=print, on_closed=None, queue_size=32, max_batch=16)
        worker.max_delay = 0
        worker.loop = asyncio.get_running_loop()

        async def reader(conn):
            while True:
                await worker.put(Item("packet", conn.session, conn))

        conns = [SimpleNamespace(client=c, session=(c, k)) for c in ("a", "b") for k in range(16)]
        tasks = [asyncio.create_task(reader(c)) for c in conns]
        for _ in range(4):
            await _settle()
            batch = worker._take()
            worker._served([(i.charged_to, 0.004, i.charged) for i in batch])
        await _settle()
        closing = asyncio.create_task(worker.put(Item("close", "expired")))
        await _settle()
        assert closing.done()  # room of its own: it did not wait
        batch = worker._take()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return [i.kind for i in batch]

    assert asyncio.run(main())[0] == "close"


def test_a_sessions_items_run_in_the_order_they_came_whichever_client_sent_them():
    """A stream resumed from another address while its earlier connection's frames are
    queued, then closed by the server: its frames run in order, the close after them."""

    async def main():
        worker = Worker(models=None, log=print, on_closed=None, queue_size=32, max_batch=16)
        worker.max_delay = 0
        worker.loop = asyncio.get_running_loop()
        before, after = SimpleNamespace(client="addr-1"), SimpleNamespace(client="addr-2")
        other = SimpleNamespace(client="other")
        for k in range(3):
            await worker.put(Item("packet", "cam", before, obj={"n": k}))
            await worker.put(Item("packet", "x", other, obj={"n": -1}))
        for k in range(3, 6):
            await worker.put(Item("packet", "cam", after, obj={"n": k}))
        await worker.put(Item("close", "cam", obj={"n": 6}))
        taken = []
        while worker.queued():
            batch = worker._take()
            taken += [i.obj["n"] for i in batch if i.session == "cam"]
            worker._served([(i.charged_to, 0.01 if i.session == "cam" else 0.0, i.charged) for i in batch])
        return taken

    assert asyncio.run(main()) == list(range(7))


def test_each_clients_connections_take_turns_among_themselves():
    async def main():
        worker = Worker(models=None, log=print, on_closed=None, queue_size=1, max_batch=1)
        worker.max_delay = 0
        worker.loop = asyncio.get_running_loop()
        conns = [SimpleNamespace(client="c", n=k) for k in range(3)]
        await worker.put(Item("packet", None, SimpleNamespace(client="c", n=-1)))  # the client's share taken

        async def reader(conn):
            for _ in range(2):
                await worker.put(Item("packet", None, conn))

        tasks = [asyncio.create_task(reader(c)) for c in conns]
        await _settle()
        taken = []
        while not all(t.done() for t in tasks) or worker.queued():
            taken.append(worker._take()[0].conn.n)
            await _settle()
        return taken[1:]

    assert asyncio.run(main()) == [0, 1, 2, 0, 1, 2]


def test_a_cancelled_waiter_leaves_nothing_behind_and_a_granted_one_its_slot():
    async def main():
        worker = Worker(models=None, log=print, on_closed=None, queue_size=1)
        worker.loop = asyncio.get_running_loop()
        conn = SimpleNamespace(client="gone")
        await worker.put(Item("packet", None, conn))  # its share
        waiting = asyncio.create_task(worker.put(Item("packet", None, conn)))
        await _settle()
        assert list(worker._waiters) == ["gone"]
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert not worker._waiters and worker._held == {"gone": 1}
        # granted, then cancelled before it put: the slot goes back
        waiting = asyncio.create_task(worker.put(Item("packet", None, conn)))
        await _settle()
        worker.max_delay = 0
        worker._take()
        worker._grant()  # the waiter's turn is set, its task not yet run
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert not worker._waiters and not worker._held and worker.queued() == 0

    asyncio.run(main())
