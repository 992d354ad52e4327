"""The streaming pipeline against its physical ceilings, in one run on one machine.

    python bench/pipeline.py --bundle DIR [--n 20000] [--quick]
                             [--bootstrap-servers H:P --redis-url redis://H:P/0]

Five measurements, all on real articles from ../shared/data, a real broker and a real Redis:

(a) Kafka ceiling    the service's own consume -> produce -> commit loop (NewsService: same
                     micro-batching, sinks, Redis writes, commits) with an *identity* predictor
                     that builds results without inference (bench/_pipeline_identity.py, a
                     benchmark baseline, never used elsewhere), draining a backlog of N.
(b) model ceiling    Predictor.predict (tokenization + ONNX Runtime + results) on pre-decoded
                     batches of max_batch_size, in this process, no Kafka at all.
(c) end to end       ``newsmtl serve`` (a subprocess) draining a backlog of N.
(d) naive baseline   one article per inference and per awaited send (bench/_pipeline_naive.py),
                     the consumer people write first, on a backlog of --naive-n.
(e) latency          ``newsmtl serve`` fed open-loop at 50% and 90% of (c)'s throughput: p50/p95/p99
                     of (output record timestamp - input record timestamp); the input timestamp is
                     the *scheduled* send time, so a producer that falls behind shows as latency.

Throughput of (a), (c) and (d) is the steady-state drain rate: records between the 5th and 95th
percentile of the output timestamps over the time between them (start-up and the last partial
batch excluded); the wall-clock drain rate from /readyz to the last output is reported as well.
Headline figures: (c) / min(a, b) (how close the service gets to its bottleneck) and (c) / (d).

Writes bench/results/<date>-<host>.json and .md (``-quick`` appended for --quick) and prints the table. Without
--bootstrap-servers/--redis-url it runs ``deploy/local/services.sh start`` (honouring
NEWSMTL_SERVICES_DIR) and leaves the services running unless --stop-services. ``--quick``
(N=2,000, short phases) finishes in under 3 minutes on a warm broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _pipeline_common import (  # noqa: E402 - after the path set-up above
    REPO,
    SERVICES_SH,
    Names,
    Probe,
    Proc,
    create_topics,
    delete_topics,
    load_articles,
    newsmtl_argv,
    produce,
    python_argv,
    read_stamps,
    to_messages,
)

LOADS = (0.5, 0.9)


# ----------------------------------------------------------------------------- set-up


def _services(args: argparse.Namespace) -> tuple[str, str, bool]:
    """``(bootstrap, redis_url, started_here)``."""
    if args.bootstrap_servers or args.redis_url:
        if not (args.bootstrap_servers and args.redis_url):
            raise SystemExit("give both --bootstrap-servers and --redis-url, or neither")
        return args.bootstrap_servers, args.redis_url, False
    running = (
        subprocess.run(["bash", str(SERVICES_SH), "status"], capture_output=True, check=False).returncode == 0
    )
    print(
        "starting the local services (deploy/local/services.sh start)..."
        if not running
        else "local services: running"
    )
    proc = subprocess.run(["bash", str(SERVICES_SH), "start"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit("services.sh start failed:\n%s" % proc.stderr[-3000:])
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return values["KAFKA_BOOTSTRAP_SERVERS"], values["REDIS_URL"], not running


def _bundle(path: Path | None) -> Path:
    candidates = [path] if path is not None else [REPO / "runs" / "base" / "bundle"]
    for candidate in candidates:
        if candidate is not None and (candidate / "manifest.json").is_file():
            return candidate.resolve()
    raise SystemExit(
        "no model bundle at %s: pass --bundle DIR (a directory written by `newsmtl export`)" % candidates[0]
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ----------------------------------------------------------------------------- figures


def _first(stamps: dict[bytes, list[int]]) -> dict[bytes, int]:
    return {key: min(values) for key, values in stamps.items()}


def steady_rate(stamps_ms: list[int]) -> float | None:
    """Records per second between the 5th and 95th percentile of the output timestamps."""
    ordered = sorted(stamps_ms)
    if len(ordered) < 20:
        return None
    lo, hi = int(0.05 * len(ordered)), int(math.ceil(0.95 * len(ordered))) - 1
    span = (ordered[hi] - ordered[lo]) / 1000
    return (hi - lo) / span if span > 0 else None


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(math.ceil(q / 100 * len(ordered))) - 1))
    return ordered[index]


async def _drain(
    label: str,
    argv: list[str],
    *,
    names: Names,
    env: dict[str, str],
    messages: list[tuple[bytes, bytes]],
    bootstrap: str,
    partitions: int,
    http: bool,
) -> dict[str, Any]:
    """Produce a backlog, start the process, wait until both output topics hold every article."""
    count = len(messages)
    await create_topics(bootstrap, names.all_topics(), partitions=partitions)
    await produce(bootstrap, names.input, messages)
    print("  %s: backlog of %d produced, starting the consumer" % (label, count), flush=True)
    proc = await Proc(label, argv, env).start()
    started = time.time()
    try:
        ready = await proc.wait_ready() if http else None
        async with Probe(bootstrap) as probe:
            timeout = max(300.0, count / 10)
            await probe.wait_count(names.styles, count, limit_s=timeout, proc=proc)
            await probe.wait_count(names.topics, count, limit_s=timeout, proc=proc)
        code = await proc.stop() if http else await proc.wait(limit_s=60)
    finally:
        if proc.returncode is None and proc.process is not None:
            proc.process.kill()
            await proc.wait(limit_s=30)
    if code != 0:
        raise RuntimeError("%s exited with %s:\n%s" % (label, code, proc.tail()))
    styles = _first(await read_stamps(bootstrap, names.styles))
    topics = _first(await read_stamps(bootstrap, names.topics))
    keys = {k for k, _ in messages}
    missing = len(keys - set(styles)) + len(keys - set(topics))
    done = [max(styles[k], topics[k]) for k in keys if k in styles and k in topics]
    last = max(done) / 1000
    origin = ready if ready is not None else started
    return {
        "articles": count,
        "missing_outputs": missing,
        "throughput_steady": steady_rate(done),
        "throughput_drain": count / (last - origin) if last > origin else None,
        "drain_from": "readyz" if ready is not None else "process start",
        "startup_s": round(ready - started, 2) if ready is not None else None,
        "wall_s": round(last - started, 2),
    }


def _model_ceiling(bundle: Path, rows: list[dict[str, Any]], batch_size: int) -> dict[str, Any]:
    from newsmtl._settings import load_settings
    from newsmtl.consumer import Predictor
    from newsmtl.schemas import Article

    settings = load_settings(model={"bundle_path": bundle})
    predictor = Predictor.load(bundle, settings=settings.model)
    articles = [Article.model_validate(row) for row in rows]
    batches = [articles[i : i + batch_size] for i in range(0, len(articles), batch_size)]
    for batch in batches[:2]:  # warm-up: ORT allocations, tokenizer caches
        predictor.predict(batch)
    seconds = []
    start = time.perf_counter()
    for batch in batches:
        t0 = time.perf_counter()
        predictor.predict(batch)
        seconds.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    return {
        "articles": len(articles),
        "batch_size": batch_size,
        "throughput": len(articles) / total,
        "batch_p50_ms": round(statistics.median(seconds) * 1000, 1),
        "providers": predictor.providers,
        "model": {
            "name": predictor.model_name,
            "version": predictor.model_version,
            "variant": predictor.manifest.variant,
        },
    }


async def _open_loop(
    bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], rate: float
) -> dict[str, Any]:
    """Send at a fixed schedule (message i at t0 + i/rate) whatever the consumer does.

    Each record's timestamp is its *scheduled* time, so lateness of this producer counts as latency.
    """
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    futures = []
    behind = 0.0
    try:
        t0_wall = time.time() + 0.2
        t0 = time.monotonic() + 0.2
        i = 0
        while i < len(messages):
            now = time.monotonic()
            while i < len(messages) and t0 + i / rate <= now:
                key, value = messages[i]
                behind = max(behind, now - (t0 + i / rate))
                stamp = int((t0_wall + i / rate) * 1000)
                futures.append(await producer.send(topic, value=value, key=key, timestamp_ms=stamp))
                i += 1
            if i < len(messages):
                await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return {"max_producer_lateness_ms": round(behind * 1000, 1)}


async def _latency(
    *,
    bundle: Path,
    bootstrap: str,
    redis_url: str,
    rows: list[dict[str, Any]],
    throughput: float,
    seconds: float,
    partitions: int,
) -> list[dict[str, Any]]:
    names = Names.new("latency")
    await create_topics(bootstrap, names.all_topics(), partitions=partitions)
    env = names.env(bootstrap=bootstrap, redis_url=redis_url, bundle=bundle)
    proc = await Proc("serve (latency)", newsmtl_argv("serve"), env).start()
    phases = []
    try:
        await proc.wait_ready()
        async with Probe(bootstrap) as probe:
            # Warm-up: the first batches pay for ONNX Runtime's allocations.
            warm = to_messages(rows[:100], suffix="~warm")
            await produce(bootstrap, names.input, warm)
            expected = len(warm)
            await probe.wait_count(names.styles, expected, limit_s=300, proc=proc)
            for load in LOADS:
                rate = load * throughput
                count = max(50, int(rate * seconds))
                # Unique ids per phase and message: an article may repeat within a phase.
                batch = [
                    dict(rows[i % len(rows)], id="%s~L%d~%d" % (rows[i % len(rows)]["id"], load * 100, i))
                    for i in range(count)
                ]
                messages = to_messages(batch)
                print(
                    "  latency at %.0f%% load: %d articles at %.1f/s" % (load * 100, count, rate), flush=True
                )
                sent = await _open_loop(bootstrap, names.input, messages, rate)
                expected += count
                await probe.wait_count(names.styles, expected, limit_s=max(300.0, count / 5), proc=proc)
                await probe.wait_count(names.topics, expected, limit_s=300, proc=proc)
                inputs = _first(await read_stamps(bootstrap, names.input))
                styles = _first(await read_stamps(bootstrap, names.styles))
                topics = _first(await read_stamps(bootstrap, names.topics))
                latencies = [
                    (max(styles[k], topics[k]) - inputs[k]) / 1000
                    for k, _ in messages
                    if k in styles and k in topics and k in inputs
                ]
                phases.append(
                    {
                        "load": load,
                        "rate": round(rate, 1),
                        "articles": count,
                        "measured": len(latencies),
                        "p50_ms": round(_pct(latencies, 50) * 1000, 1),
                        "p95_ms": round(_pct(latencies, 95) * 1000, 1),
                        "p99_ms": round(_pct(latencies, 99) * 1000, 1),
                        "max_ms": round(max(latencies) * 1000, 1),
                        **sent,
                    }
                )
        await proc.stop()
    finally:
        if proc.returncode is None and proc.process is not None:
            proc.process.kill()
            await proc.wait(limit_s=30)
        await delete_topics(bootstrap, names.all_topics())
    return phases


# ----------------------------------------------------------------------------- report


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else "%.*f" % (digits, value)


def _table(report: dict[str, Any]) -> list[str]:
    k, m, e, n = report["kafka_ceiling"], report["model_ceiling"], report["end_to_end"], report["naive"]
    lines = [
        "| measurement | articles | throughput (art/s) | notes |",
        "|---|---:|---:|---|",
        "| (a) Kafka ceiling: service loop, identity predictor | %d | %s | drain from /readyz %s art/s |"
        % (k["articles"], _fmt(k["throughput_steady"]), _fmt(k["throughput_drain"])),
        "| (b) model ceiling: Predictor.predict, batch %d | %d | %s | batch p50 %s ms, %s |"
        % (
            m["batch_size"],
            m["articles"],
            _fmt(m["throughput"]),
            m["batch_p50_ms"],
            ", ".join(m["providers"]),
        ),
        "| (c) end to end: `newsmtl serve` | %d | %s | drain from /readyz %s art/s, start-up %s s |"
        % (e["articles"], _fmt(e["throughput_steady"]), _fmt(e["throughput_drain"]), e["startup_s"]),
        "| (d) naive: 1 article per inference and per awaited send | %d | %s | |"
        % (n["articles"], _fmt(n["throughput_steady"])),
    ]
    lines += [
        "",
        "| (e) open-loop load | rate (art/s) | articles | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for phase in report["latency"]:
        lines.append(
            "| %.0f%% of (c) | %.1f | %d | %.1f | %.1f | %.1f | %.1f |"
            % (
                phase["load"] * 100,
                phase["rate"],
                phase["articles"],
                phase["p50_ms"],
                phase["p95_ms"],
                phase["p99_ms"],
                phase["max_ms"],
            )
        )
    h = report["headline"]
    lines += [
        "",
        "Headline: (c) / min(a, b) = **%s** (bottleneck: %s); (c) / (d) = **%sx**."
        % (_fmt(h["e2e_over_ceiling"], 2), h["bottleneck"], _fmt(h["e2e_over_naive"], 1)),
        "",
        "Loop and model on the same cores: serial bound 1 / (1/a + 1/b) = %s art/s; (c) reaches %s of it."
        % (_fmt(h["serial_bound"]), _fmt(h["e2e_over_serial_bound"], 2)),
    ]
    return lines


def _markdown(report: dict[str, Any]) -> str:
    m = report["model_ceiling"]["model"]
    head = [
        "# Pipeline benchmark %s on %s" % (report["created_at"], report["host"]),
        "",
        "- machine: %d CPUs (%s), load average before %s / after %s"
        % (
            report["cpus"],
            report["cpu_model"],
            ", ".join("%.2f" % x for x in report["load_average_before"]),
            ", ".join("%.2f" % x for x in report["load_average_after"]),
        ),
        "- model: %s %s (%s) from `%s`" % (m["name"], m["version"], m["variant"], report["bundle"]),
        "- batching: max_batch_size=%(max_batch_size)d, max_wait_ms=%(max_wait_ms)d, "
        "max_in_flight_batches=%(max_in_flight_batches)d, %(partitions)d input partitions"
        % report["settings"],
        "- command: `%s`" % report["command"],
        "",
    ]
    return "\n".join(head + _table(report)) + "\n"


# ----------------------------------------------------------------------------- main


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from newsmtl._settings import load_settings

    bundle = _bundle(args.bundle)
    bootstrap, redis_url, started_here = _services(args)
    batching = load_settings().batching
    n = args.n
    rows = load_articles(max(n, args.naive_n, args.model_n))
    print("bundle %s, broker %s, redis %s, N=%d" % (bundle, bootstrap, redis_url, n), flush=True)
    load_before = os.getloadavg()
    created: list[Names] = []

    def names(label: str) -> Names:
        created.append(Names.new(label))
        return created[-1]

    report: dict[str, Any] = {}
    try:
        print("(b) model ceiling: Predictor.predict on %d pre-decoded articles" % args.model_n, flush=True)
        model = await asyncio.to_thread(_model_ceiling, bundle, rows[: args.model_n], batching.max_batch_size)

        print("(a) Kafka ceiling: the service loop with the identity predictor", flush=True)
        ident = names("kafka-ceiling")
        kafka = await _drain(
            "identity worker",
            python_argv("_pipeline_identity.py"),
            names=ident,
            env=ident.env(bootstrap=bootstrap, redis_url=redis_url, bundle=bundle),
            messages=to_messages(rows[:n]),
            bootstrap=bootstrap,
            partitions=args.partitions,
            http=True,
        )

        print("(c) end to end: newsmtl serve", flush=True)
        serve = names("end-to-end")
        e2e = await _drain(
            "newsmtl serve",
            newsmtl_argv("serve"),
            names=serve,
            env=serve.env(bootstrap=bootstrap, redis_url=redis_url, bundle=bundle),
            messages=to_messages(rows[:n]),
            bootstrap=bootstrap,
            partitions=args.partitions,
            http=True,
        )

        print("(d) naive baseline: one article per inference and per send", flush=True)
        naive_names = names("naive")
        naive = await _drain(
            "naive consumer",
            python_argv("_pipeline_naive.py")
            + [
                "--bootstrap-servers",
                bootstrap,
                "--redis-url",
                redis_url,
                "--bundle",
                str(bundle),
                "--input",
                naive_names.input,
                "--topics",
                naive_names.topics,
                "--styles",
                naive_names.styles,
                "--dlq",
                naive_names.dlq,
                "--group",
                naive_names.group,
                "--prefix",
                naive_names.redis_prefix,
                "--count",
                str(args.naive_n),
            ],  # fmt: skip
            names=naive_names,
            env={"PYTHONUNBUFFERED": "1"},
            messages=to_messages(rows[: args.naive_n]),
            bootstrap=bootstrap,
            partitions=args.partitions,
            http=False,
        )

        c = e2e["throughput_steady"] or e2e["throughput_drain"]
        print(
            "(e) latency at %s of %.1f art/s" % (" and ".join("%.0f%%" % (x * 100) for x in LOADS), c),
            flush=True,
        )
        latency = await _latency(
            bundle=bundle,
            bootstrap=bootstrap,
            redis_url=redis_url,
            rows=rows,
            throughput=c,
            seconds=args.latency_seconds,
            partitions=args.partitions,
        )
    finally:
        for made in created:
            await delete_topics(bootstrap, made.all_topics())
        if started_here and args.stop_services:
            await asyncio.to_thread(
                subprocess.run, ["bash", str(SERVICES_SH), "stop"], capture_output=True, check=False
            )

    a = kafka["throughput_steady"] or kafka["throughput_drain"]
    b = model["throughput"]
    d = naive["throughput_steady"] or naive["throughput_drain"]
    ceiling = min(a, b)
    report.update(
        kind="newsmtl-pipeline-bench/1",
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        host=socket.gethostname(),
        cpus=os.cpu_count(),
        cpu_model=_cpu_model(),
        python=platform.python_version(),
        load_average_before=load_before,
        load_average_after=os.getloadavg(),
        command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        quick=args.quick,
        bundle=str(bundle),
        services={"bootstrap": bootstrap, "redis": redis_url, "started_here": started_here},
        settings={
            "max_batch_size": batching.max_batch_size,
            "max_wait_ms": batching.max_wait_ms,
            "max_in_flight_batches": batching.max_in_flight_batches,
            "partitions": args.partitions,
        },
        kafka_ceiling=kafka,
        model_ceiling=model,
        end_to_end=e2e,
        naive=naive,
        latency=latency,
        headline={
            "e2e_over_ceiling": c / ceiling,
            "bottleneck": "model (b)" if b <= a else "Kafka loop (a)",
            "e2e_over_naive": c / d,
            # When the loop and the model share the same cores (no spare core for either), their
            # costs add up: 1 / (1/a + 1/b) articles/s is then the attainable ceiling.
            "serial_bound": 1 / (1 / a + 1 / b),
            "e2e_over_serial_bound": c * (1 / a + 1 / b),
            "throughput": "steady-state (p5-p95 of output timestamps) for a, c, d",
        },
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None, help="model bundle (default runs/base/bundle)")
    parser.add_argument("--n", type=int, default=None, help="backlog size of (a) and (c) (default 20000)")
    parser.add_argument("--naive-n", type=int, default=None, help="backlog of (d) (default 2000)")
    parser.add_argument("--model-n", type=int, default=None, help="articles of (b) (default 5000)")
    parser.add_argument(
        "--latency-seconds", type=float, default=None, help="length of each (e) phase (default 60)"
    )
    parser.add_argument("--partitions", type=int, default=3, help="partitions of every topic")
    parser.add_argument("--quick", action="store_true", help="N=2000, short phases: under 3 minutes")
    parser.add_argument(
        "--bootstrap-servers", default=None, help="use this broker instead of the local services"
    )
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of the local services")
    parser.add_argument(
        "--stop-services", action="store_true", help="stop the local services if started here"
    )
    parser.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    quick = {"n": 2_000, "naive_n": 300, "model_n": 1_000, "latency_seconds": 12.0}
    full = {"n": 20_000, "naive_n": 2_000, "model_n": 5_000, "latency_seconds": 60.0}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if min(args.n, args.naive_n, args.model_n) < 100:
        parser.error("--n, --naive-n and --model-n must be at least 100")

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # A producer's retry right after a topic is created ("not leader") is expected and harmless.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    t0 = time.monotonic()
    report = asyncio.run(_run(args))
    report["bench_seconds"] = round(time.monotonic() - t0, 1)
    # A quick run never overwrites the full figures of the same day.
    stem = "%s-%s%s" % (
        datetime.now(UTC).strftime("%Y-%m-%d"),
        socket.gethostname(),
        "-quick" if args.quick else "",
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / (stem + ".json")).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out_dir / (stem + ".md")).write_text(_markdown(report), encoding="utf-8")
    print()
    print("\n".join(_table(report)))
    print("\nwritten to %s.{json,md} in %.0f s" % (args.out_dir / stem, report["bench_seconds"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
