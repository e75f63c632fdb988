"""A connection's tasks end when they are cancelled, whatever completes at that moment:
Python 3.11's ``asyncio.wait_for`` returns the result of what completes as its caller is
cancelled, and the cancellation is lost."""

import asyncio
from types import SimpleNamespace

from temposplit.server.server import Connection


class _Writer:
    """A writer whose drain ends when the test says."""

    def __init__(self, drained: asyncio.Future):
        self.drained = drained

    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        await self.drained


def test_a_writer_cancelled_as_its_drain_ends_stops():
    """A client that closed at once after reading its WELCOME: the reader, seeing the close,
    cancelled the writer as the WELCOME's drain ended; the writer went on waiting for more to
    write, the reader waited for the writer, and the connection (its slot, its stream,
    attached) stayed until the server stopped, whose stop then waited 10 s for it."""

    async def main() -> bool:
        loop = asyncio.get_running_loop()
        drained = loop.create_future()
        conn = Connection(SimpleNamespace(loop=loop, write_timeout=30.0), None, _Writer(drained), "127.0.0.1")
        writer = asyncio.create_task(conn.write_loop())
        conn.post(b"welcome", release=False)
        for _ in range(5):  # the writer takes the WELCOME and waits for its drain
            await asyncio.sleep(0)
        assert not writer.done()
        drained.set_result(None)  # the drain ends ...
        writer.cancel()  # ... as the reader cancels the writer
        done, _ = await asyncio.wait([writer], timeout=10)
        return writer in done and writer.cancelled()

    assert asyncio.run(main())


def test_a_reader_cancelled_as_its_byte_arrives_stops():
    """The stop cancels every connection's reader: one cancelled as a byte arrived went on
    reading, and the stop waited 10 s for it."""

    async def main() -> bool:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        conn = Connection(SimpleNamespace(loop=loop), reader, None, "127.0.0.1")

        async def read():
            return await conn.recv({}, timeout=60.0)

        task = asyncio.create_task(read())
        for _ in range(5):  # waiting for the first byte
            await asyncio.sleep(0)
        reader.feed_data(b"\x01")  # a byte arrives ...
        task.cancel()  # ... as the stop cancels the reader
        done, _ = await asyncio.wait([task], timeout=10)
        return task in done and task.cancelled()

    assert asyncio.run(main())
