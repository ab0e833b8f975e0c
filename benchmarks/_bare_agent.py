"""The throughput baseline: a bare Faust agent (aiokafka transport, no tables, no lanes)
that consumes the deferred topic and Avro-decodes every request, nothing else.

Run by ``bench_pipeline.py`` as its own process, configured like a worker (the
``BATCHBRIDGE_*`` environment of the pipeline); prints the running count of decoded
requests on a file (fixed width, rewritten in place) after every bundle, which the benchmark polls. It takes bundles the way
the worker's intake does (``take_events(stream_buffer, within=0.05)``).

    python benchmarks/_bare_agent.py <app id> <data dir> <progress file>
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import faust  # noqa: E402

from connector import schemas  # noqa: E402
from connector.config import Settings  # noqa: E402
from connector.serde import build_codec  # noqa: E402


def main(app_id: str, datadir: str, progress_path: str) -> None:
    progress = os.open(progress_path, os.O_WRONLY | os.O_CREAT, 0o644)
    settings = Settings()
    codec = build_codec(settings)
    topic_name = settings.topics.deferred
    servers = ";".join(s.strip() for s in settings.kafka.bootstrap_servers.split(","))
    app = faust.App(
        app_id,
        broker=f"kafka://{servers}",
        store="memory://",
        web_enabled=False,
        datadir=datadir,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        broker_session_timeout=6.0,  # as the worker's: group joins on tansu are quicker
        broker_heartbeat_interval=1.0,
        stream_buffer_maxsize=settings.stream_buffer,
        broker_max_poll_records=settings.stream_buffer,
        topic_partitions=settings.partitions,
    )
    source = app.topic(topic_name, key_serializer="raw", value_serializer="raw")
    decoded = 0

    @app.agent(source, name="bare")
    async def bare(stream: Any) -> None:
        nonlocal decoded
        async for events in stream.take_events(settings.stream_buffer, within=0.05):
            for event in events:
                codec.decode(schemas.REQUEST, event.value, topic_name)
                decoded += 1
            os.pwrite(progress, b"%20d" % decoded, 0)

    logging.basicConfig(level=logging.WARNING)
    faust.Worker(
        app, loglevel="WARNING", quiet=True, redirect_stdouts=False
    ).execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
