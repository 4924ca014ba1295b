"""The Faust floor of ``bench/stream_bench.py``: one Faust agent that forwards each message.

A worker of this app (``faust -A bench.faust_floor worker``, run by the bench) reads
``mats.signals`` and sends each value, as it is, to ``bench.faust-out``: the least a Faust agent
can do per message. It is the stream app's own :class:`MatsApp` with the same settings
(``acks=all``, idempotent producers, the same session timeouts), with no tables, no book and no
desk, so the difference between this floor and the worker is what MATS does per block, and the
difference between it and the plain aiokafka loop is Faust's own cost.

Of the ways to write the agent, this is the fastest measured here (bursts of 20,000 signals, one
run each, on the same broker): the stream taken in batches (``take_events``) and each message
handed to the app's producer, 5,300-6,700 messages a second; ``Topic.send`` per event
(``stream.events()`` or ``stream.items()``) 3,600-6,100. Its group starts at the end of the
topic, as the aiokafka loop's does.

With ``MATS_BENCH_FLOOR_OUTS=N`` (default 1) each message is sent N times: N-1 copies to
``bench.faust-extra`` first, then the one timed to ``bench.faust-out``. Three is the least a
block costs a Faust worker, whatever the desk does: its allocation instruction, a child order
and the entry of the table that makes it durable (a message on the table's changelog).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import faust

from streams.app import MatsApp, app_settings

SIGNALS = "mats.signals"
FAUST_OUT = "bench.faust-out"
FAUST_EXTRA = "bench.faust-extra"
OUTS = int(os.environ.get("MATS_BENCH_FLOOR_OUTS", "1"))
BATCH = 500
WITHIN_S = 0.005


class FloorApp(MatsApp):
    """The stream app's app class, without its start-up checks (it reads no book)."""

    def check(self) -> None:
        pass


# a group of its own for each number of messages out, so that each run starts at the end
app = FloorApp(f"bench-faust-floor-{OUTS}", consumer_auto_offset_reset="latest",
               **app_settings())
signals = app.topic(SIGNALS, key_type=bytes, value_type=bytes, key_serializer="raw",
                    value_serializer="raw")


@app.agent(signals)
async def forward(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
    """Each message's value to ``bench.faust-out``, under its key (after its extra copies)."""
    async for events in stream.take_events(BATCH, within=WITHIN_S):  # type: ignore[attr-defined]
        for event in events:
            for _ in range(OUTS - 1):
                await app.producer.send(FAUST_EXTRA, event.message.key, event.value, None,
                                        None, None)
            await app.producer.send(FAUST_OUT, event.message.key, event.value, None, None,
                                    None)
        yield None
