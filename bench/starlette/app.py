"""The FastAPI + sse-starlette peer of Pulse for the benchmark suite (bench/).

What someone would write with sse-starlette to do Pulse's two jobs, kept as plain as the
library's own examples, on one uvicorn worker:

- ``GET /subscribe?topic=T``: an event stream of every update published to ``T`` after the
  subscription started (an in-process broadcast: one asyncio queue per subscriber), each
  event with an ``id:`` (the topic's update number) and the published body as its data.
  The queue is registered in the handler, before the response head goes out, so every
  update published after the head arrives is delivered (loadgen's ``--api starlette``).
- ``POST /publish?topic=T``: the body is the update; answered ``204`` once it has been put
  in every current subscriber's queue (how sse-starlette apps usually fan out).
- ``GET /stream``: Pulse's counter: ``new_message`` events ``Counter value N`` with
  ``id: N`` for N = 1..COUNT, the first at once and the others INTERVAL apart, then
  ``end_event`` "End of the stream", then the response ends.

Settings come from the environment so that the benchmark can match the Pulse server's:
``STREAM_COUNT`` (default 20), ``STREAM_INTERVAL_S`` (seconds, default 1.0),
``STREAM_RETRY_MS`` (the ``retry:`` field, default 15000) and ``KEEP_ALIVE_S`` (seconds of
silence before a ping comment, default 15, as Pulse's ``--keep-alive``).

Run: ``uvicorn app:app --app-dir bench/starlette --host 127.0.0.1 --port 8082``.
"""

import asyncio
import os
from collections import defaultdict
from itertools import count

from fastapi import FastAPI, Request, Response
from sse_starlette.sse import EventSourceResponse, ServerSentEvent

STREAM_COUNT = int(os.environ.get("STREAM_COUNT", "20"))
STREAM_INTERVAL_S = float(os.environ.get("STREAM_INTERVAL_S", "1.0"))
STREAM_RETRY_MS = int(os.environ.get("STREAM_RETRY_MS", "15000"))
KEEP_ALIVE_S = float(os.environ.get("KEEP_ALIVE_S", "15"))

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

# topic -> the queues of its current subscribers
subscribers: dict[str, set[asyncio.Queue]] = defaultdict(set)
# topic -> the id of its next update
next_id: dict[str, count] = defaultdict(lambda: count(1))


@app.post("/publish")
async def publish(topic: str, request: Request) -> Response:
    data = (await request.body()).decode()
    update = (next(next_id[topic]), data)
    for queue in list(subscribers.get(topic, ())):
        queue.put_nowait(update)
    return Response(status_code=204)


@app.get("/subscribe")
async def subscribe(topic: str) -> EventSourceResponse:
    queue: asyncio.Queue = asyncio.Queue()
    subscribers[topic].add(queue)

    async def updates():
        try:
            while True:
                update_id, data = await queue.get()
                yield ServerSentEvent(data=data, id=str(update_id))
        finally:
            watchers = subscribers.get(topic)
            if watchers is not None:
                watchers.discard(queue)
                if not watchers:
                    del subscribers[topic]

    return EventSourceResponse(updates(), ping=KEEP_ALIVE_S)


@app.get("/stream")
async def stream() -> EventSourceResponse:
    async def counter():
        for value in range(1, STREAM_COUNT + 1):
            if value > 1:
                await asyncio.sleep(STREAM_INTERVAL_S)
            yield ServerSentEvent(
                data=f"Counter value {value}",
                event="new_message",
                id=str(value),
                retry=STREAM_RETRY_MS,
            )
        yield ServerSentEvent(data="End of the stream", event="end_event")

    return EventSourceResponse(counter(), ping=KEEP_ALIVE_S)
