"""``newsmtl replay``: re-score a file or a Kafka range through the service's Predictor and sinks.

Exit status: 0 when every record was classified, 1 when any record failed (see the errors
file), 2 for unusable flags, inputs, bundles or sinks (message on stderr).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import typer

from newsmtl._errors import ConfigError, DataError

__all__ = ["register"]


def _classified_at(value: str) -> Any:
    from newsmtl.replay import parse_timestamp

    if value in ("article", "now"):
        return value
    return parse_timestamp(value, flag="--classified-at")


def _echo_summary(summary: Any) -> None:
    s = summary
    if s.already_complete:
        typer.echo(
            "replay already complete according to %s: read %d, classified %d, failed %d "
            "(pass --restart to replay again)" % (s.checkpoint, s.read, s.classified, s.failed)
        )
        return
    if s.dry_run:
        typer.echo(
            "dry run: read %d, valid %d, invalid %d in %.1f s (%.0f records/s); nothing written"
            % (s.read, s.classified, s.failed, s.elapsed_s, s.rate)
        )
    else:
        typer.echo(
            "replay: read %d, classified %d, failed %d in %.1f s (%.1f articles/s)"
            % (s.read, s.classified, s.failed, s.elapsed_s, s.rate)
        )
        if s.resumed_from is not None:
            typer.echo("resumed from %s" % json.dumps(s.resumed_from, sort_keys=True))
        written = []
        if s.output is not None:
            written.append("results: %s" % s.output)
        if s.errors_file is not None and s.failed:
            written.append("errors: %s" % s.errors_file)
        if s.checkpoint is not None:
            written.append("checkpoint: %s" % s.checkpoint)
        if written:
            typer.echo("; ".join(written))
    if s.stopped_early:
        typer.echo(
            "stopped after %d records (--stop-after); run the same command again to continue"
            % s.read_this_run
        )
    for line in s.errors:
        typer.echo("error: %s" % json.dumps(line, sort_keys=True), err=True)
    if s.errors and s.failed > len(s.errors):
        typer.echo(
            "... and %d more errors (give --errors FILE to keep them all)" % (s.failed - len(s.errors)),
            err=True,
        )


def register(app: typer.Typer) -> None:
    @app.command("replay")
    def replay(
        bundle: Path | None = typer.Option(
            None, "--bundle", help="Model bundle directory (default: the bundle packaged with newsmtl)."
        ),
        input_file: Path | None = typer.Option(
            None, "--input", help="Replay a JSONL, JSONL.gz or CSV(.gz) file of articles."
        ),
        topic: str | None = typer.Option(None, "--topic", help="Replay this Kafka topic instead of a file."),
        input_format: str = typer.Option("auto", "--format", help="auto (from the file name), jsonl or csv."),
        fields: list[str] = typer.Option(
            [],
            "--field",
            help="Map an article field to an input column or key: --field text=body (repeatable).",
        ),
        bootstrap_servers: str | None = typer.Option(
            None, "--bootstrap-servers", help="Kafka bootstrap servers (input topic and --to-kafka)."
        ),
        from_offset: int | None = typer.Option(
            None, "--from-offset", help="First offset of every partition."
        ),
        to_offset: int | None = typer.Option(
            None, "--to-offset", help="End offset (exclusive) of every partition."
        ),
        partition_ranges: list[str] = typer.Option(
            [],
            "--partition-range",
            help="P:START-END, END exclusive, either bound may be empty (repeatable).",
        ),
        from_time: str | None = typer.Option(
            None, "--from-time", help="ISO-8601 time; via offsets_for_times."
        ),
        to_time: str | None = typer.Option(None, "--to-time", help="ISO-8601 time (exclusive)."),
        output: Path | None = typer.Option(
            None, "--output", help="Write results (one JSON object a line) here."
        ),
        to_kafka: bool = typer.Option(False, "--to-kafka", help="Publish results to the output topics."),
        topics_topic: str | None = typer.Option(
            None, "--topics-topic", help="Output topic of topic results."
        ),
        styles_topic: str | None = typer.Option(
            None, "--styles-topic", help="Output topic of style results."
        ),
        to_redis: str | None = typer.Option(None, "--to-redis", help="Write results to Redis at this URL."),
        redis_key_prefix: str | None = typer.Option(None, "--redis-key-prefix", help="Redis key prefix."),
        errors: Path | None = typer.Option(
            None, "--errors", help="Bad records go here (default: <output>.errors.jsonl)."
        ),
        checkpoint: Path | None = typer.Option(
            None, "--checkpoint", help="Resumable checkpoint (default: <output>.checkpoint.json)."
        ),
        restart: bool = typer.Option(
            False, "--restart", help="Ignore an existing checkpoint and start afresh."
        ),
        classified_at: str = typer.Option(
            "article",
            "--classified-at",
            help="article (published_at, else the Kafka time, else 1970-01-01), now, or an ISO-8601 time.",
        ),
        batch_size: int = typer.Option(64, "--batch-size", min=1, max=4096, help="Records per batch."),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="Only read, count and validate; write nothing."
        ),
        stop_after: int | None = typer.Option(
            None,
            "--stop-after",
            min=1,
            help="Stop at the first batch boundary after N records (resume later).",
        ),
        progress: bool | None = typer.Option(
            None, "--progress/--no-progress", help="Progress bar (default: when stderr is a terminal)."
        ),
        summary_json: Path | None = typer.Option(
            None, "--summary-json", help="Also write the summary as JSON."
        ),
        providers: str | None = typer.Option(None, "--providers", help="auto, cpu, cuda or tensorrt."),
    ) -> None:
        """Re-score history (a file or a Kafka range) through the service's model and sinks."""
        from rich.console import Console

        from newsmtl._settings import load_settings
        from newsmtl.replay import (
            FileReader,
            KafkaRangeReader,
            RangeSpec,
            ReplayOptions,
            parse_field_mapping,
            parse_partition_range,
            parse_timestamp,
            run_replay,
        )

        if (input_file is None) == (topic is None):
            raise ConfigError("give exactly one input: --input FILE or --topic TOPIC")
        if input_format not in ("auto", "jsonl", "csv"):
            raise ConfigError("--format must be auto, jsonl or csv, got %r" % input_format)
        if bundle is not None and not bundle.is_dir():
            raise ConfigError("--bundle %s is not a directory" % bundle)
        settings = load_settings(
            kafka={"bootstrap_servers": bootstrap_servers},
            topics={"topics": topics_topic, "styles": styles_topic},
            redis={"url": to_redis, "enabled": True if to_redis else None, "key_prefix": redis_key_prefix},
            model={"bundle_path": bundle, "providers": providers},
        )
        kafka_flags = any(v is not None for v in (from_offset, to_offset, from_time, to_time)) or bool(
            partition_ranges
        )
        reader: Any
        if input_file is not None:
            if kafka_flags:
                raise ConfigError(
                    "--from-offset/--to-offset/--partition-range/--from-time/--to-time need --topic"
                )
            if not input_file.is_file():
                raise DataError("input file %s does not exist or is not a regular file" % input_file)
            if not os.access(input_file, os.R_OK):
                raise DataError("input file %s is not readable" % input_file)
            reader = FileReader(
                input_file,
                fmt=input_format,  # type: ignore[arg-type]
                fields=parse_field_mapping(fields),
                max_bytes=settings.batching.max_message_bytes,
            )
        else:
            if fields or input_format != "auto":
                raise ConfigError("--field and --format apply to --input files, not to --topic")
            spec = RangeSpec(
                partitions=tuple(parse_partition_range(p) for p in partition_ranges),
                from_offset=from_offset,
                to_offset=to_offset,
                from_time=parse_timestamp(from_time, flag="--from-time") if from_time else None,
                to_time=parse_timestamp(to_time, flag="--to-time") if to_time else None,
            )
            reader = KafkaRangeReader(
                kafka=settings.kafka, topic=str(topic), spec=spec, fetch_records=max(batch_size, 64)
            )
        if output is not None and output.is_dir():
            raise ConfigError("--output %s is a directory" % output)
        if errors is None and output is not None:
            errors = Path(str(output) + ".errors.jsonl")
        if checkpoint is None and output is not None:
            checkpoint = Path(str(output) + ".checkpoint.json")
        for path in (output, errors, checkpoint):
            if path is not None and not path.parent.is_dir():
                raise ConfigError("directory %s does not exist (for %s)" % (path.parent, path.name))
        console = Console(stderr=True)
        options = ReplayOptions(
            settings=settings,
            bundle=bundle,
            output=output,
            errors=errors,
            checkpoint=checkpoint,
            restart=restart,
            to_kafka=to_kafka,
            to_redis=to_redis is not None,
            classified_at=_classified_at(classified_at),
            batch_size=batch_size,
            dry_run=dry_run,
            stop_after=stop_after,
            progress=console.is_terminal if progress is None else progress,
        )
        summary = asyncio.run(run_replay(reader, options, console=console))
        _echo_summary(summary)
        if summary_json is not None:
            summary_json.write_text(
                json.dumps(summary.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )
        if summary.failed:
            raise typer.Exit(1)
