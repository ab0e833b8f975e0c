"""The ``batchbridge`` command line (also ``python -m connector``).

Heavy imports (the Faust app, the emulator, the topic admin) happen inside the commands,
so ``--help`` works and stays fast whatever is installed.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from connector.config import Settings, get_settings
from connector.errors import BatchBridgeError

# No locals in tracebacks: they would show settings, and settings hold API keys.
app = typer.Typer(
    name="batchbridge",
    help="Kafka connector that moves deferrable LLM inference requests onto provider Batch APIs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
topics_app = typer.Typer(help="Topic definitions as code (topics/*.yaml).", no_args_is_help=True)
app.add_typer(topics_app, name="topics")

# Piped output (CI logs, files) gets room for the tables instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 132)
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def handled(func: F) -> F:
    """Print the connector's own errors as one line and exit 1, without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BatchBridgeError as exc:
            err_console.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def load_settings() -> Settings:
    """The settings, or a readable list of what is wrong with them (exit 2)."""
    from pydantic import ValidationError

    try:
        return get_settings()
    except ValidationError as exc:
        err_console.print("[bold red]invalid settings[/bold red] (environment / .env):")
        for error in exc.errors():
            name = "BATCHBRIDGE_" + "__".join(str(part) for part in error["loc"]).upper()
            # The offending value is left out: it may be a secret.
            err_console.print(f"  {name}: {error['msg']}", soft_wrap=True)
        raise typer.Exit(2) from None


def _sigterm_as_interrupt() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@app.command()
@handled
def broker(
    port: Annotated[int, typer.Option(help="Port to listen on (0 = a free one).")] = 9092,
    host: Annotated[str, typer.Option(help="Address to bind; loopback by default.")] = "127.0.0.1",
) -> None:
    """Run the embedded Kafka-compatible broker (tansu, memory only) in the foreground."""
    from connector.broker import EmbeddedBroker

    _sigterm_as_interrupt()
    embedded = EmbeddedBroker(host=host, port=port).start()
    try:
        console.print(f"broker ready: bootstrap servers [bold]{embedded.bootstrap_servers}[/bold] (Ctrl-C stops it)")
        print(embedded.bootstrap_servers, flush=True)
        while embedded.running:
            time.sleep(0.5)
        err_console.print("[bold red]error:[/bold red] the broker process exited")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        console.print("stopping broker")
    finally:
        embedded.stop()


@topics_app.command("apply")
@handled
def topics_apply(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan, change nothing.")] = False,
    directory: Annotated[Path | None, typer.Option("--dir", help="Topics directory (default: topics/).")] = None,
    increase_partitions: Annotated[
        bool, typer.Option("--increase-partitions", help="Raise partition counts below the declared ones.")
    ] = False,
) -> None:
    """Create the declared topics that are missing; report drift; never delete."""
    from connector.topics import apply_topics, render_plan

    plan = apply_topics(load_settings(), directory, dry_run=dry_run, increase_partitions=increase_partitions)
    console.print(render_plan(plan))
    if plan.no_changes:
        console.print("no changes")


@topics_app.command("list")
@handled
def topics_list(
    directory: Annotated[Path | None, typer.Option("--dir", help="Topics directory (default: topics/).")] = None,
) -> None:
    """Show the topics that exist on the broker."""
    from connector.topics import list_topics, render_topics

    console.print(render_topics(list_topics(load_settings(), directory)))


@app.command()
@handled
def emulator(
    host: Annotated[str, typer.Option(help="Address to bind; loopback by default.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8089,
    processing_seconds: Annotated[float, typer.Option(help="How long a batch takes.")] = 2.0,
    error_rate: Annotated[float, typer.Option(help="Share of requests that fail (0..1).")] = 0.0,
    error_kinds: Annotated[
        str, typer.Option(help="Comma-separated: rate_limit, server_error, overloaded, invalid_request, policy.")
    ] = "server_error",
    seed: Annotated[int, typer.Option(help="Seed of the deterministic responses and faults.")] = 0,
    batch_outcome: Annotated[
        str | None, typer.Option(help="Force every batch to: failed, expired, cancelled or stuck.")
    ] = None,
    webhook_url: Annotated[str | None, typer.Option(help="Send OpenAI batch webhooks here.")] = None,
    any_model: Annotated[
        bool, typer.Option("--any-model", help="Serve any model name (default: refuse unknown models).")
    ] = False,
    flex_429_rate: Annotated[
        float, typer.Option(help="Share of OpenAI Flex calls answered 429 Resource Unavailable.")
    ] = 0.0,
) -> None:
    """Run the provider emulator (OpenAI, Anthropic and Gemini batch routes) in the foreground.

    More faults at run time: POST a JSON object to /_emulator/faults (see the README).
    """
    from connector.emulator import EmulatorConfig, run_emulator

    try:
        config = EmulatorConfig(
            processing_seconds=processing_seconds,
            error_rate=error_rate,
            error_kinds=[kind.strip() for kind in error_kinds.split(",") if kind.strip()],
            seed=seed,
            batch_outcome=batch_outcome,
            webhook_url=webhook_url,
            webhook_secret=_webhook_secret(),
            flex_429_rate=flex_429_rate,
            **({"known_models": {}} if any_model else {}),
        )
    except ValueError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    _sigterm_as_interrupt()
    run_emulator(
        config,
        host,
        port,
        on_ready=lambda url: console.print(f"emulator ready on {url} (OpenAI base URL: {url}/v1; Ctrl-C stops it)"),
    )


def _webhook_secret() -> str | None:
    secret = load_settings().webhook_secret
    return secret.get_secret_value() if secret else None


@app.command()
@handled
def worker() -> None:
    """Run the Faust worker with the deferred and realtime lanes (blocking)."""
    from connector.app import run_worker

    run_worker(load_settings())


@app.command()
@handled
def status(
    timeout: Annotated[float, typer.Option(help="Seconds to read the batches topic.")] = 10.0,
    show_all: Annotated[bool, typer.Option("--all", help="Also show batches in a final state.")] = False,
) -> None:
    """In-flight batches (latest event per batch from the batches topic) and counts by state."""
    from connector import schemas, summary
    from connector.client import read_topics

    settings = load_settings()
    events = (record for _, record in read_topics(settings, {settings.topics.batches: schemas.BATCH_EVENT}, timeout=timeout))
    latest = summary.latest_batches(events)
    shown = (
        sorted(latest.values(), key=lambda e: (e["opened_at"], e["batch_id"])) if show_all else summary.in_flight(latest)
    )
    now = time.time() * 1000
    table = Table(title="Batches" if show_all else "In-flight batches")
    for column in ("batch", "provider", "model", "endpoint", "state", "requests", "provider batch", "age"):
        table.add_column(column)
    for event in shown:
        table.add_row(
            event["batch_id"],
            event["provider"],
            event["model"],
            event["endpoint"],
            event["state"],
            str(event["request_count"]),
            event.get("provider_batch_id") or "-",
            f"{(now - event['opened_at']) / 1000:.0f} s",
        )
    counts = summary.state_counts(latest)
    table.caption = ", ".join(f"{state}: {n}" for state, n in counts.items()) or "no batches"
    console.print(table)


@app.command()
@handled
def report(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to read the topics.")] = 30.0,
) -> None:
    """Cost and savings per provider and model, from the results and dead-letter topics."""
    from collections import Counter

    from connector import schemas, summary
    from connector.client import read_topics

    settings = load_settings()
    topics = {settings.topics.results: schemas.RESULT, settings.topics.deadletter: schemas.FAILURE}
    seen: set[str] = set()
    results: list[dict[str, Any]] = []
    failures: Counter[str] = Counter()
    duplicates = 0
    for topic, record in read_topics(settings, topics, timeout=timeout):
        request_id = record.get("request_id")
        if request_id is not None:
            if request_id in seen:
                duplicates += 1
                continue
            seen.add(request_id)
        if topic == settings.topics.results:
            results.append(record)
        else:
            failures[record["error_class"]] += 1
    rows = summary.cost_rows(results)
    total = summary.total_row(rows)
    if as_json:
        out = {
            "results": total.requests,
            "deadletters": sum(failures.values()),
            "deadletters_by_class": dict(sorted(failures.items())),
            "duplicates": duplicates,
            "cost_usd": round(total.cost_usd, 6),
            "realtime_cost_usd": round(total.realtime_cost_usd, 6),
            "saving_usd": round(total.saving_usd, 6),
            "saving_pct": total.saving_pct,
            "by_model": [row.as_dict() for row in rows],
        }
        print(json.dumps(out, indent=2))
        return
    table = Table(title="Cost report")
    for column in ("provider", "model", "requests", "input tok", "output tok", "cost", "realtime-equivalent", "saving"):
        table.add_column(column, justify="left" if column in ("provider", "model") else "right")
    for row in [*rows, total] if rows else []:
        table.add_row(
            row.provider,
            row.model,
            str(row.requests),
            f"{row.input_tokens:,}",
            f"{row.output_tokens:,}",
            f"${row.cost_usd:,.4f}",
            f"${row.realtime_cost_usd:,.4f}",
            "-" if row.saving_pct is None else f"${row.saving_usd:,.4f} ({row.saving_pct}%)",
            style="bold" if row is total else None,
        )
    table.caption = f"dead letters: {sum(failures.values())}" + (
        " (" + ", ".join(f"{k}: {v}" for k, v in sorted(failures.items())) + ")" if failures else ""
    )
    console.print(table)


@app.command()
@handled
def demo(
    requests: Annotated[int, typer.Option(min=1, help="How many requests to send.")] = 500,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every outcome.")] = 180.0,
) -> None:
    """Everything on this machine: broker, emulator, worker, sample workload, summary."""
    from connector.demo import DemoOptions, render_summary, run_demo

    # Progress and notes go to stderr so that --json leaves stdout as pure JSON.
    progress_console = err_console if as_json else console
    result = run_demo(
        DemoOptions(requests=requests, workers=workers, timeout_s=timeout), load_settings(), progress_console
    )
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        render_summary(result, console)
    if not result["complete"]:
        err_console.print(
            f"[bold red]incomplete:[/bold red] {result['missing']} of {result['requests']} requests had no "
            f"result or dead letter after {timeout:.0f} s; see {', '.join(result['worker_logs'])}"
        )
        raise typer.Exit(1)


@app.command()
@handled
def produce(
    count: Annotated[int, typer.Option(min=1, help="How many sample requests.")] = 10,
    file: Annotated[
        Path | None,
        typer.Option(help="A JSON request (or a list): request_id, provider, model, endpoint, body, …"),
    ] = None,
    lane: Annotated[str, typer.Option(help="deferred or realtime (sample requests keep their own lane).")] = "deferred",
) -> None:
    """Send sample requests from the demo data set, or the request(s) in a JSON file."""
    import uuid

    from connector.client import RequestProducer, make_request, now_ms
    from connector.workload import build_workload

    settings = load_settings()
    if lane not in ("deferred", "realtime"):
        err_console.print("[bold red]error:[/bold red] --lane must be deferred or realtime")
        raise typer.Exit(2)
    sends: list[tuple[dict[str, Any], str]] = []
    if file is not None:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            err_console.print(f"[bold red]error:[/bold red] cannot read {file}: {exc}")
            raise typer.Exit(2) from None
        for entry in data if isinstance(data, list) else [data]:
            try:
                request = make_request(
                    entry.get("request_id") or f"cli-{uuid.uuid4().hex}",
                    entry["provider"],
                    entry["model"],
                    entry["endpoint"],
                    entry["body"],
                    metadata=entry.get("metadata"),
                    deadline_ms=entry.get("deadline"),
                    reply_topic=entry.get("reply_topic"),
                )
            except KeyError as exc:
                err_console.print(f"[bold red]error:[/bold red] request in {file} lacks field {exc}")
                raise typer.Exit(2) from None
            sends.append((request, lane))
    else:
        items = build_workload(count, uuid.uuid4().hex[:8], now_ms())
        sends = [(item.request, item.lane) for item in items]
    with RequestProducer(settings) as producer:
        for request, request_lane in sends:
            producer.send(request, lane=request_lane)  # type: ignore[arg-type]
        producer.flush()
    for request, request_lane in sends:
        console.print(f"{request_lane:<8} {request['request_id']}  {request['provider']} {request['model']}")
    console.print(f"sent {len(sends)} request(s)")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
