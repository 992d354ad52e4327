"""The replay loop: read a batch, validate it, classify it, write it everywhere, checkpoint.

::

    reader (file or Kafka range) ──batch of N raw records──> decode_article each
        ──valid──> Predictor.predict in a worker thread  (overlaps with reading the next batch)
        ──invalid──> errors file (source + reason)
    results, in input order ──> output JSONL │ KafkaResultSink │ RedisResultSink   (the service's sinks)
        ──> fsync output + errors ──> checkpoint {input position, output and errors byte lengths}

Batches are cut by input position (every ``batch_size`` raw records from the start), so a
resumed replay sees exactly the batches an uninterrupted one would have; with
``classified_at="article"`` the results do not depend on the wall clock, so two replays of the
same input with the same bundle write byte-identical files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from newsmtl._errors import ConfigError, InvalidArticleError, ModelError, SinkError
from newsmtl._settings import Settings
from newsmtl.replay._inputs import RawRecord, RecordReader
from newsmtl.replay._output import AppendFile, Checkpoint, stable_json
from newsmtl.schemas import Article, ClassificationResult, Source, decode_article

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from newsmtl.consumer import KafkaResultSink, Predictor, RedisResultSink

__all__ = ["EPOCH", "ClassifiedAt", "ReplayOptions", "ReplaySummary", "run_replay"]

log = logging.getLogger(__name__)

# The classification time of a record with neither a publication time nor a Kafka timestamp:
# fixed, so that outputs stay deterministic.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

ClassifiedAt = Literal["article", "now"] | datetime

# Records whose errors are kept in the summary when there is no errors file to write them to.
_MAX_ERRORS_KEPT = 20


@dataclass(frozen=True, kw_only=True)
class ReplayOptions:
    """How to replay; the CLI builds this from its flags.

    ``classified_at``: ``"article"`` stamps each result with the article's ``published_at``,
    else its Kafka message time, else :data:`EPOCH`; ``"now"`` uses the wall clock; a
    ``datetime`` stamps every result with that time.
    """

    settings: Settings
    bundle: Path | None = None
    output: Path | None = None
    errors: Path | None = None
    checkpoint: Path | None = None
    restart: bool = False
    to_kafka: bool = False
    to_redis: bool = False
    classified_at: ClassifiedAt = "article"
    batch_size: int = 64
    dry_run: bool = False
    stop_after: int | None = None
    progress: bool = False
    sink_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be >= 1, got %d" % self.batch_size)
        if self.stop_after is not None and self.stop_after < 1:
            raise ConfigError("--stop-after must be >= 1, got %d" % self.stop_after)
        if not self.dry_run and self.output is None and not self.to_kafka and not self.to_redis:
            raise ConfigError(
                "nowhere to write results: give --output, --to-kafka and/or --to-redis (or --dry-run)"
            )
        if self.sink_timeout_s <= 0:
            raise ConfigError("sink timeout must be positive")


@dataclass(kw_only=True)
class ReplaySummary:
    """What a replay did. ``read``/``classified``/``failed`` cover the whole replay, resumed
    parts included; ``read_this_run`` and ``elapsed_s`` only this invocation."""

    read: int = 0
    classified: int = 0
    failed: int = 0
    read_this_run: int = 0
    elapsed_s: float = 0.0
    dry_run: bool = False
    resumed_from: dict[str, Any] | None = None
    stopped_early: bool = False
    already_complete: bool = False
    output: Path | None = None
    errors_file: Path | None = None
    checkpoint: Path | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Input records per second in this invocation."""
        return self.read_this_run / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "classified": self.classified,
            "failed": self.failed,
            "read_this_run": self.read_this_run,
            "elapsed_s": round(self.elapsed_s, 3),
            "rate_per_s": round(self.rate, 1),
            "dry_run": self.dry_run,
            "resumed_from": self.resumed_from,
            "stopped_early": self.stopped_early,
            "already_complete": self.already_complete,
            "output": str(self.output) if self.output else None,
            "errors_file": str(self.errors_file) if self.errors_file else None,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
        }


@dataclass(slots=True)
class _Prepared:
    """One batch after validation, before inference."""

    raw_count: int
    position: dict[str, Any]
    # Input order: (index into articles) or an error line.
    items: list[int | dict[str, Any]]
    articles: list[Article]
    sources: list[Source]
    stamps: list[datetime | None]
    inference: asyncio.Future[list[ClassificationResult | Exception]] | None = None


def _error_line(
    record_source: Source, kind: str, reason: str, article_id: str | None = None
) -> dict[str, Any]:
    line: dict[str, Any] = {
        "error_class": kind,
        "reason": reason,
        "source": record_source.model_dump(mode="json"),
    }
    if article_id is not None:
        line["id"] = article_id
    return line


def _utc(moment: datetime) -> datetime:
    """The same instant in UTC (naive times are taken as UTC), so every output time reads alike."""
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _classify(
    predictor: Predictor, articles: Sequence[Article], sources: Sequence[Source], when: datetime | None
) -> list[ClassificationResult | Exception]:
    """Runs in a worker thread. Like the service, a failing batch is retried article by article
    so that one poison article fails alone; if all of them fail, the model is broken."""
    try:
        return list(predictor.predict(articles, sources, classified_at=when))
    except Exception as batch_exc:
        if len(articles) == 1:
            return [batch_exc]
        outcomes: list[ClassificationResult | Exception] = []
        for article, source in zip(articles, sources, strict=True):
            try:
                outcomes.extend(predictor.predict([article], [source], classified_at=when))
            except Exception as exc:  # noqa: BLE001 - becomes this article's error line
                outcomes.append(exc)
        if all(isinstance(o, Exception) for o in outcomes):
            raise ModelError(
                "the model failed on every article of a batch of %d: %s: %s"
                % (len(articles), type(batch_exc).__name__, batch_exc)
            ) from batch_exc
        return outcomes


def _restamp(result: ClassificationResult, when: datetime) -> ClassificationResult:
    return result.model_copy(
        update={
            "topic": result.topic.model_copy(update={"classified_at": when}),
            "style": result.style.model_copy(update={"classified_at": when}),
        }
    )


class _Replay:
    def __init__(
        self,
        reader: RecordReader,
        options: ReplayOptions,
        predictor: Predictor | None,
        console: Console | None,
    ) -> None:
        self.reader = reader
        self.opts = options
        self.predictor = predictor
        self.console = console
        self.summary = ReplaySummary(dry_run=options.dry_run)
        self.checkpoint_path = None if options.dry_run else options.checkpoint
        self.output: AppendFile | None = None
        self.errors: AppendFile | None = None
        self.kafka_sink: KafkaResultSink | None = None
        self.redis_sink: RedisResultSink | None = None
        self.job: dict[str, Any] = {}
        self.progress: Progress | None = None
        self.task_id: TaskID | None = None
        self.started = time.perf_counter()

    # -- set-up ---------------------------------------------------------------------------
    def _job(self) -> dict[str, Any]:
        opts, predictor = self.opts, self.predictor
        when = opts.classified_at
        return {
            "input": self.reader.describe(),
            "model": (
                {
                    "name": predictor.model_name,
                    "version": predictor.model_version,
                    "files": dict(sorted(predictor.manifest.files.items())),
                }
                if predictor is not None
                else None
            ),
            "classified_at": when.isoformat() if isinstance(when, datetime) else when,
            "output": str(opts.output) if opts.output else None,
            "errors": str(opts.errors) if opts.errors else None,
        }

    def _load_checkpoint(self) -> Checkpoint | None:
        path = self.checkpoint_path
        if path is None:
            return None
        if self.opts.restart:
            path.unlink(missing_ok=True)
            return None
        checkpoint = Checkpoint.load(path)
        if checkpoint is None:
            return None
        differs = checkpoint.mismatches(self.job)
        if differs:
            if checkpoint.done:
                log.info(
                    "checkpoint %s belongs to a finished replay of something else (%s): starting afresh",
                    path,
                    ", ".join(differs),
                )
                return None
            raise ConfigError(
                "checkpoint %s belongs to an unfinished replay with a different %s; "
                "run that replay again to finish it, or pass --restart to start this one afresh"
                % (path, ", ".join(differs))
            )
        return checkpoint

    async def _start_sinks(self, stack: contextlib.AsyncExitStack) -> None:
        if self.opts.dry_run:
            return
        settings = self.opts.settings
        from newsmtl.consumer import KafkaResultSink, RedisResultSink

        if self.opts.to_kafka:
            self.kafka_sink = await stack.enter_async_context(
                KafkaResultSink(kafka=settings.kafka, topics=settings.topics)
            )
        if self.opts.to_redis:
            sink = await stack.enter_async_context(RedisResultSink(settings=settings.redis))
            if not await sink.ping():
                raise ConfigError("cannot reach Redis at %s" % settings.redis.url)
            self.redis_sink = sink

    # -- the loop -------------------------------------------------------------------------
    async def run(self) -> ReplaySummary:
        opts = self.opts
        if not opts.dry_run and self.predictor is None:
            from newsmtl.consumer import Predictor

            self.predictor = await asyncio.to_thread(
                Predictor.load, opts.bundle, settings=opts.settings.model
            )
        self.job = self._job()
        checkpoint = self._load_checkpoint()
        summary = self.summary
        summary.output, summary.checkpoint = opts.output, self.checkpoint_path
        summary.errors_file = None if opts.dry_run else opts.errors
        if checkpoint is not None:
            summary.read = checkpoint.counts.get("read", 0)
            summary.classified = checkpoint.counts.get("classified", 0)
            summary.failed = checkpoint.counts.get("failed", 0)
            if checkpoint.done:
                summary.already_complete = True
                return summary
            summary.resumed_from = dict(checkpoint.position)
            log.info("resuming replay from %s", checkpoint.position)
        try:
            async with contextlib.AsyncExitStack() as stack:
                # Input and sinks first: a replay that cannot start leaves the files as they were.
                await self.reader.open(checkpoint.position if checkpoint else None)
                stack.push_async_callback(self.reader.close)
                await self._start_sinks(stack)
                if not opts.dry_run:
                    if opts.output is not None:
                        self.output = AppendFile(
                            opts.output, resume_length=checkpoint.output_bytes if checkpoint else None
                        )
                    if opts.errors is not None:
                        self.errors = AppendFile(
                            opts.errors,
                            resume_length=checkpoint.errors_bytes if checkpoint else None,
                            lazy=True,
                        )
                # The rate covers the replay itself, not the model load or connecting.
                self.started = time.perf_counter()
                with self._progress():
                    await self._loop()
        finally:
            for handle in (self.output, self.errors):
                if handle is not None:
                    handle.close()
        summary.elapsed_s = time.perf_counter() - self.started
        return summary

    @contextlib.contextmanager
    def _progress(self) -> Any:
        if not self.opts.progress:
            yield
            return
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        progress = Progress(
            TextColumn("[bold]%s" % ("validating" if self.opts.dry_run else "replaying")),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[records]} records"),
            TextColumn("{task.fields[rate]} /s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress = progress
        self.task_id = progress.add_task(
            "replay",
            total=self.reader.progress_total,
            completed=self.reader.progress_done(),
            records=0,
            rate="-",
        )
        with progress:
            yield
        self.progress = None

    def _update_progress(self) -> None:
        if self.progress is None or self.task_id is None:
            return
        elapsed = time.perf_counter() - self.started
        rate = self.summary.read_this_run / elapsed if elapsed > 0 else 0.0
        self.progress.update(
            self.task_id,
            completed=self.reader.progress_done(),
            records=self.summary.read,
            rate="%.0f" % rate,
        )

    async def _batches(self) -> AsyncGenerator[tuple[list[RawRecord], dict[str, Any]], None]:
        size = self.opts.batch_size
        batch: list[RawRecord] = []
        async with contextlib.aclosing(self.reader.records()) as records:
            async for record in records:
                batch.append(record)
                if len(batch) >= size:
                    # The reader is suspended just after this batch's last record, so its
                    # position is exactly where the next batch starts.
                    yield batch, self.reader.position()
                    batch = []
        if batch:
            yield batch, self.reader.position()

    async def _loop(self) -> None:
        opts = self.opts
        pending: _Prepared | None = None
        stopped = False
        try:
            async with contextlib.aclosing(self._batches()) as batches:
                async for raw, position in batches:
                    self.summary.read_this_run += len(raw)
                    current = self._prepare(raw, position)
                    if pending is not None:
                        await self._finish(pending)
                    pending = current
                    if opts.stop_after is not None and self.summary.read_this_run >= opts.stop_after:
                        stopped = True
                        break
            if pending is not None:
                done, pending = pending, None
                await self._finish(done)
        finally:
            if pending is not None and pending.inference is not None:
                # Let the worker thread finish before the predictor goes away; its results are dropped.
                await asyncio.gather(pending.inference, return_exceptions=True)
        self.summary.stopped_early = stopped
        if not stopped:
            self._save_checkpoint(self.reader.position(), done=True)

    def _prepare(self, raw: list[RawRecord], position: dict[str, Any]) -> _Prepared:
        max_bytes = self.opts.settings.batching.max_message_bytes
        prepared = _Prepared(
            raw_count=len(raw), position=position, items=[], articles=[], sources=[], stamps=[]
        )
        for record in raw:
            if record.error is not None:
                prepared.items.append(_error_line(record.source, record.error.kind, record.error.reason))
                continue
            try:
                article = decode_article(record.value, max_bytes=max_bytes)
            except InvalidArticleError as exc:
                prepared.items.append(_error_line(record.source, exc.kind, exc.reason))
                continue
            prepared.items.append(len(prepared.articles))
            prepared.articles.append(article)
            prepared.sources.append(record.source)
            prepared.stamps.append(self._stamp(article, record))
        if prepared.articles and not self.opts.dry_run and self.predictor is not None:
            when = self.opts.classified_at
            batch_when: datetime | None
            if when == "now":
                batch_when = None
            elif isinstance(when, datetime):
                batch_when = _utc(when)
            else:
                batch_when = EPOCH
            prepared.inference = asyncio.ensure_future(
                asyncio.to_thread(_classify, self.predictor, prepared.articles, prepared.sources, batch_when)
            )
        return prepared

    def _stamp(self, article: Article, record: RawRecord) -> datetime | None:
        if self.opts.classified_at != "article":
            return None
        if article.published_at is not None:
            return _utc(article.published_at)
        return record.timestamp or EPOCH

    async def _finish(self, batch: _Prepared) -> None:
        outcomes: list[ClassificationResult | Exception] = []
        if batch.inference is not None:
            outcomes = await batch.inference
        results: list[ClassificationResult] = []
        error_lines: list[dict[str, Any]] = []
        for item in batch.items:
            if isinstance(item, dict):
                error_lines.append(item)
                continue
            if self.opts.dry_run:
                self.summary.classified += 1  # "valid" in a dry run: decoded, not classified
                continue
            outcome = outcomes[item]
            if isinstance(outcome, Exception):
                article = batch.articles[item]
                error_lines.append(
                    _error_line(
                        batch.sources[item],
                        "inference",
                        "%s: %s" % (type(outcome).__name__, outcome),
                        article.id,
                    )
                )
                continue
            stamp = batch.stamps[item]
            results.append(_restamp(outcome, stamp) if stamp is not None else outcome)
        await self._write(results)
        self._record_errors(error_lines)
        self.summary.read += batch.raw_count
        self.summary.classified += len(results)
        self.summary.failed += len(error_lines)
        self._save_checkpoint(batch.position, done=False)
        self._update_progress()

    async def _write(self, results: list[ClassificationResult]) -> None:
        if not results:
            return
        if self.output is not None:
            self.output.write_lines([stable_json(r) for r in results])
        sends: list[Awaitable[None]] = []
        kafka_sink, redis_sink = self.kafka_sink, self.redis_sink
        if kafka_sink is not None:
            sends.append(self._deliver(lambda: kafka_sink.send_batch(results), "publishing results to Kafka"))
        if redis_sink is not None:
            sends.append(self._deliver(lambda: redis_sink.write_batch(results), "writing results to Redis"))
        if sends:
            await asyncio.gather(*sends)

    async def _deliver(self, operation: Callable[[], Awaitable[None]], what: str) -> None:
        from newsmtl.consumer import retry_transient

        service = self.opts.settings.service
        try:
            async with asyncio.timeout(self.opts.sink_timeout_s):
                await retry_transient(
                    operation,
                    what=what,
                    initial_backoff_s=service.retry_initial_backoff_s,
                    max_backoff_s=service.retry_max_backoff_s,
                )
        except TimeoutError:
            raise SinkError(
                "%s did not succeed within %.0f s; the checkpoint still points before this batch"
                % (what, self.opts.sink_timeout_s)
            ) from None

    def _record_errors(self, lines: list[dict[str, Any]]) -> None:
        if not lines:
            return
        if self.errors is not None:
            self.errors.write_lines([stable_json(line) for line in lines])
            return
        room = _MAX_ERRORS_KEPT - len(self.summary.errors)
        if room > 0:
            self.summary.errors.extend(lines[:room])

    def _save_checkpoint(self, position: dict[str, Any], *, done: bool) -> None:
        path = self.checkpoint_path
        if path is None:
            return
        # Output first: the checkpoint must never claim bytes that are not on disk.
        for handle in (self.output, self.errors):
            if handle is not None:
                handle.sync()
        Checkpoint(
            job=self.job,
            position=position,
            output_bytes=self.output.length if self.output is not None else 0,
            errors_bytes=self.errors.length if self.errors is not None else 0,
            counts={
                "read": self.summary.read,
                "classified": self.summary.classified,
                "failed": self.summary.failed,
            },
            done=done,
        ).save(path)


async def run_replay(
    reader: RecordReader,
    options: ReplayOptions,
    *,
    predictor: Predictor | None = None,
    console: Console | None = None,
) -> ReplaySummary:
    """Replay ``reader`` through the predictor into the sinks of ``options``.

    ``predictor`` may be passed already loaded (benchmarks, the demo); otherwise the bundle of
    ``options.bundle`` (``None``: the packaged default) is loaded. Raises
    :class:`~newsmtl.ConfigError` / :class:`~newsmtl.DataError` for unusable flags or inputs,
    :class:`~newsmtl.SinkError` when a sink stays unavailable, :class:`~newsmtl.ModelError`
    when the model fails on whole batches. Bad records are not errors: they are counted and
    written to the errors file.
    """
    return await _Replay(reader, options, predictor, console).run()
