"""Sustained throughput of ``newsmtl serve`` draining a backlog, against model-only throughput.

    deploy/local/services.sh start            # prints KAFKA_BOOTSTRAP_SERVERS=... REDIS_URL=...
    python bench/serve_throughput.py --bundle BUNDLE_DIR --bootstrap-servers HOST:PORT \\
        --redis-url redis://HOST:PORT/0 [--articles 20000] [--max-batch-size 64]

1. model only: ``Predictor.predict`` over the same articles in batches of ``--max-batch-size``,
   in one thread (what the service's inference thread does);
2. service: the articles are produced to a fresh input topic first (a backlog), then the real
   ``newsmtl serve`` CLI runs as a subprocess; the drain rate is measured from the group's first
   committed offset to the last (startup, model load and group join are excluded; every counted
   article was published to both topics, written to Redis and committed).

Real articles from ../shared/data; fresh topics, group and Redis prefix, deleted/expired after.
Prints one table; figures depend on the machine and on everything else it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.fixtures.kafka_utils import create_topics, delete_topics, produce_messages, unique_name  # noqa: E402
from tests.service._helpers import ServeProcess, article_messages, committed_offsets  # noqa: E402

from newsmtl._settings import ModelSettings  # noqa: E402
from newsmtl.consumer import Predictor  # noqa: E402
from newsmtl.schemas import Article  # noqa: E402


def model_only(
    bundle: Path, messages: list[tuple[bytes, bytes]], batch_size: int, intra_op_threads: int
) -> tuple[float, str]:
    predictor = Predictor.load(bundle, settings=ModelSettings(intra_op_threads=intra_op_threads))
    articles = [Article.model_validate_json(value) for _, value in messages]
    predictor.predict(articles[:batch_size])  # warm-up: first-run allocations
    start = time.perf_counter()
    for i in range(0, len(articles), batch_size):
        predictor.predict(articles[i : i + batch_size])
    elapsed = time.perf_counter() - start
    return len(articles) / elapsed, "%s %s (%s)" % (
        predictor.model_name,
        predictor.model_version,
        predictor.manifest.variant,
    )


async def service_drain(args: argparse.Namespace, messages: list[tuple[bytes, bytes]]) -> dict[str, float]:
    names = {p: unique_name("bench-" + p) for p in ("articles", "topics", "styles", "dlq", "group", "redis")}
    await create_topics(args.bootstrap_servers, [names["articles"]], partitions=args.partitions)
    await create_topics(
        args.bootstrap_servers, [names["topics"], names["styles"], names["dlq"]], partitions=args.partitions
    )
    try:
        start = time.perf_counter()
        await produce_messages(args.bootstrap_servers, names["articles"], messages, timeout=600, linger_ms=20)
        produce_s = time.perf_counter() - start
        serve = ServeProcess(
            [
                "serve",
                "--bundle",
                str(args.bundle),
                "--bootstrap-servers",
                args.bootstrap_servers,
                "--redis-url",
                args.redis_url,
                "--group-id",
                names["group"],
                "--input-topic",
                names["articles"],
                "--topics-topic",
                names["topics"],
                "--styles-topic",
                names["styles"],
                "--dlq-topic",
                names["dlq"],
                "--http-port",
                "0",
                "--max-batch-size",
                str(args.max_batch_size),
                "--providers",
                "cpu",
            ],
            {
                "NEWSMTL_REDIS__KEY_PREFIX": names["redis"] + ":",
                "NEWSMTL_REDIS__TTL_SECONDS": "600",
                "NEWSMTL_SERVICE__LOG_FORMAT": "text",
                "NEWSMTL_SERVICE__LOG_LEVEL": "WARNING",
                "NEWSMTL_MODEL__INTRA_OP_THREADS": str(args.intra_op_threads),
            },
        )
        launched = time.perf_counter()
        await serve.start()
        try:
            first_at = first_count = None
            total = len(messages)
            while True:
                done = await committed_offsets(args.bootstrap_servers, names["group"])
                now = time.perf_counter()
                if done and first_at is None:
                    first_at, first_count = now, done
                if done >= total:
                    break
                if serve.process is not None and serve.process.returncode is not None:
                    raise RuntimeError("newsmtl serve exited early:\n" + serve.tail())
                if now - launched > args.timeout:
                    raise TimeoutError(
                        "drained only %d of %d articles in %.0f s" % (done, total, args.timeout)
                    )
                await asyncio.sleep(0.25)
            serve.send(signal.SIGTERM)
            await serve.wait(timeout=60)
        finally:
            await serve.kill()
        assert first_at is not None and first_count is not None
        return {
            "produce_per_s": total / produce_s,
            "drain_per_s": (total - first_count) / max(1e-9, now - first_at),
            "wall_per_s": total / (now - launched),
            "startup_s": first_at - launched,
        }
    finally:
        await delete_topics(
            args.bootstrap_servers, [names[p] for p in ("articles", "topics", "styles", "dlq")]
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument(
        "--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--articles", type=int, default=20_000)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument(
        "--intra-op-threads", type=int, default=0, help="ONNX Runtime threads (0: its default, all cores)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    messages = article_messages(args.articles)
    load_before = os.getloadavg()
    model_rate, model = model_only(args.bundle, messages, args.max_batch_size, args.intra_op_threads)
    figures = asyncio.run(service_drain(args, messages))
    load_after = os.getloadavg()

    print(
        "model: %s, %d real articles, batches of %d, CPU threads available: %d, ORT intra-op threads: %s"
        % (model, len(messages), args.max_batch_size, os.cpu_count() or 0, args.intra_op_threads or "default")
    )
    print("load average before/after: %.1f / %.1f (the CPU is shared)" % (load_before[0], load_after[0]))
    print("%-48s %10s" % ("measure", "articles/s"))
    print("%-48s %10.0f" % ("model only (Predictor.predict, one thread)", model_rate))
    print("%-48s %10.0f" % ("newsmtl serve, sustained drain (commit to commit)", figures["drain_per_s"]))
    print(
        "%-48s %10.0f"
        % ("newsmtl serve, wall incl. %.1f s startup" % figures["startup_s"], figures["wall_per_s"])
    )
    print("%-48s %10.0f" % ("producing the backlog (acks=all)", figures["produce_per_s"]))
    print("service / model-only: %.0f%%" % (100 * figures["drain_per_s"] / model_rate))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "model": model,
                    "articles": len(messages),
                    "model_only_per_s": model_rate,
                    **figures,
                    "load_before": load_before,
                    "load_after": load_after,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
