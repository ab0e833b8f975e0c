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
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from connector.config import Settings, get_settings
from connector.errors import BatchBridgeError

if TYPE_CHECKING:
    from connector.deadletters import Selection

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
        console.print(
            f"broker ready: bootstrap servers [bold]{embedded.bootstrap_servers}[/bold] (Ctrl-C stops it)"
        )
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
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the plan, change nothing.")
    ] = False,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Topics directory (default: BATCHBRIDGE_TOPICS_DIR, else the shipped topics/).",
        ),
    ] = None,
    increase_partitions: Annotated[
        bool,
        typer.Option(
            "--increase-partitions", help="Raise partition counts below the declared ones."
        ),
    ] = False,
) -> None:
    """Create the declared topics that are missing; report drift; never delete."""
    from connector.render import plan_table
    from connector.topics import apply_topics

    plan = apply_topics(
        load_settings(), directory, dry_run=dry_run, increase_partitions=increase_partitions
    )
    console.print(plan_table(plan))
    if plan.no_changes:
        console.print("no changes")


@topics_app.command("list")
@handled
def topics_list(
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Topics directory (default: BATCHBRIDGE_TOPICS_DIR, else the shipped topics/).",
        ),
    ] = None,
) -> None:
    """Show the topics that exist on the broker."""
    from connector.render import topics_table
    from connector.topics import list_topics

    console.print(topics_table(list_topics(load_settings(), directory)))


@app.command()
@handled
def emulator(
    host: Annotated[str, typer.Option(help="Address to bind; loopback by default.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8089,
    processing_seconds: Annotated[float, typer.Option(help="How long a batch takes.")] = 2.0,
    error_rate: Annotated[float, typer.Option(help="Share of requests that fail (0..1).")] = 0.0,
    error_kinds: Annotated[
        str,
        typer.Option(
            help="Comma-separated: rate_limit, server_error, overloaded, invalid_request, policy."
        ),
    ] = "server_error",
    seed: Annotated[int, typer.Option(help="Seed of the deterministic responses and faults.")] = 0,
    batch_outcome: Annotated[
        str | None, typer.Option(help="Force every batch to: failed, expired, cancelled or stuck.")
    ] = None,
    webhook_url: Annotated[
        str | None, typer.Option(help="Send OpenAI batch webhooks here.")
    ] = None,
    any_model: Annotated[
        bool,
        typer.Option("--any-model", help="Serve any model name (default: refuse unknown models)."),
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
        )
        if any_model:
            config = config.merged({"known_models": {}})
    except ValueError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    _sigterm_as_interrupt()
    run_emulator(
        config,
        host,
        port,
        on_ready=lambda url: console.print(
            f"emulator ready on {url} (OpenAI base URL: {url}/v1; Ctrl-C stops it)"
        ),
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
    show_all: Annotated[
        bool, typer.Option("--all", help="Also show batches in a final state.")
    ] = False,
) -> None:
    """In-flight batches (latest event per batch from the batches topic) and counts by state."""
    from connector import schemas, summary
    from connector.client import read_topics
    from connector.render import status_table

    settings = load_settings()
    events = (
        record
        for _, record in read_topics(
            settings, {settings.topics.batches: schemas.BATCH_EVENT}, timeout=timeout
        )
    )
    latest = summary.latest_batches(events)
    shown = summary.shown_batches(latest, show_all)
    console.print(
        status_table(
            shown, summary.state_counts(latest), show_all=show_all, now_ms=time.time() * 1000
        )
    )


@app.command()
@handled
def report(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to read the topics.")] = 30.0,
) -> None:
    """Cost and savings per provider and model, from the results and dead-letter topics."""
    from connector import schemas, summary
    from connector.client import read_topics
    from connector.render import report_view

    settings = load_settings()
    topics = {settings.topics.results: schemas.RESULT, settings.topics.deadletter: schemas.FAILURE}
    records = read_topics(settings, topics, timeout=timeout)
    outcomes = summary.first_outcomes(
        ("result" if topic == settings.topics.results else "deadletter", record)
        for topic, record in records
    )
    cost = summary.cost_report(outcomes.results)
    if not as_json:
        console.print(report_view(cost, outcomes.failures_by_class))
        return
    out = {
        "results": cost.total.requests,
        "deadletters": outcomes.deadletters,
        "deadletters_by_class": outcomes.failures_by_class,
        "duplicates": outcomes.duplicates,
        **cost.as_dict(),
    }
    print(json.dumps(out, indent=2))


@app.command()
@handled
def demo(
    requests: Annotated[int, typer.Option(min=1, help="How many requests to send.")] = 500,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object.")
    ] = False,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every outcome.")] = 180.0,
) -> None:
    """Everything on this machine: broker, emulator, worker, sample workload, summary."""
    from connector.demo import DemoOptions, run_demo
    from connector.render import demo_summary

    # Progress and notes go to stderr so that --json leaves stdout as pure JSON.
    progress_console = err_console if as_json else console
    result = run_demo(
        DemoOptions(requests=requests, workers=workers, timeout_s=timeout),
        load_settings(),
        progress_console,
    )
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        console.print(demo_summary(result))
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
        typer.Option(
            help="A JSON request (or a list): request_id, provider, model, endpoint, body, …"
        ),
    ] = None,
    lane: Annotated[
        str, typer.Option(help="deferred or realtime (sample requests keep their own lane).")
    ] = "deferred",
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
                err_console.print(
                    f"[bold red]error:[/bold red] request in {file} lacks field {exc}"
                )
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
        console.print(
            f"{request_lane:<8} {request['request_id']}  {request['provider']} {request['model']}"
        )
    console.print(f"sent {len(sends)} request(s)")


# Filters shared by `deadletters` and `replay`.
ClassOpt = Annotated[list[str] | None, typer.Option("--class", help="Error class (repeatable).")]
ProviderOpt = Annotated[list[str] | None, typer.Option("--provider", help="Provider (repeatable).")]
ModelOpt = Annotated[list[str] | None, typer.Option("--model", help="Model (repeatable).")]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        help="Failed at or after: 2h, 30m, 7d (ago), ISO 8601 (UTC if no zone), epoch ms."
    ),
]
UntilOpt = Annotated[str | None, typer.Option(help="Failed before (same forms as --since).")]
IdOpt = Annotated[list[str] | None, typer.Option("--request-id", help="Request id (repeatable).")]
IdsFileOpt = Annotated[
    Path | None, typer.Option("--ids-file", help="A file of request ids, one per line.")
]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds to read the topics.")]


def _selection(
    classes: list[str] | None,
    providers: list[str] | None,
    models: list[str] | None,
    since: str | None,
    until: str | None,
    request_ids: list[str] | None,
    ids_file: Path | None,
) -> Selection:
    """The dead letters the filters select; a bad time or ids file is a usage error."""
    from connector.client import now_ms
    from connector.deadletters import Selection, parse_time

    ids = set(request_ids or ())
    if ids_file is not None:
        try:
            ids |= {
                line.strip()
                for line in ids_file.read_text(encoding="utf-8").splitlines()
                if line.strip()
            }
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot read {ids_file}: {exc}", param_hint="--ids-file"
            ) from None
    now = now_ms()
    try:
        since_ms = parse_time(since, now) if since else None
        until_ms = parse_time(until, now) if until else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since / --until") from None
    return Selection(
        classes=frozenset(classes or ()),
        providers=frozenset(providers or ()),
        models=frozenset(models or ()),
        request_ids=frozenset(ids),
        since_ms=since_ms,
        until_ms=until_ms,
    )


@app.command()
@handled
def deadletters(
    classes: ClassOpt = None,
    providers: ProviderOpt = None,
    models: ModelOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    request_ids: IdOpt = None,
    ids_file: IdsFileOpt = None,
    show: Annotated[
        int, typer.Option(min=0, help="Also list the newest N matching dead letters.")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    timeout: TimeoutOpt = 30.0,
) -> None:
    """Count dead letters by class, provider and model; --show lists the newest of them."""
    from dataclasses import asdict

    from connector.deadletters import count, read_deadletters, read_replayed, summary_of
    from connector.render import deadletter_counts, deadletter_list

    selection = _selection(classes, providers, models, since, until, request_ids, ids_file)
    settings = load_settings()
    replayed = read_replayed(settings, timeout=timeout)
    matching = (dl for dl in read_deadletters(settings, timeout=timeout) if selection.matches(dl))
    tally = count(matching, replayed, keep=show)
    if as_json:
        rows = tally.rows()
        out: dict[str, Any] = {
            "total": tally.total,
            "replayable": sum(row.replayable for row in rows),
            "replayed": sum(row.replayed for row in rows),
            "by": [asdict(row) for row in rows],
        }
        if show:
            out["newest"] = [summary_of(dl) for dl in tally.newest()]
        print(json.dumps(out, indent=2))
        return
    console.print(deadletter_counts(tally))
    if show and tally.total:
        console.print(deadletter_list(tally.newest()))


@app.command()
@handled
def replay(
    classes: ClassOpt = None,
    providers: ProviderOpt = None,
    models: ModelOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    request_ids: IdOpt = None,
    ids_file: IdsFileOpt = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Select every dead letter (no filter).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be replayed, send nothing.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Send dead letters an earlier replay sent too.")
    ] = False,
    show: Annotated[
        int, typer.Option(min=0, help="List at most N of the replayed dead letters.")
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    timeout: TimeoutOpt = 30.0,
) -> None:
    """Re-send selected dead letters' original requests to the deferred topic, attempt 1."""
    from connector.deadletters import plan_replay, read_deadletters, read_replayed, send_replays
    from connector.render import progress, replay_view
    from connector.serde import build_codec

    selection = _selection(classes, providers, models, since, until, request_ids, ids_file)
    if selection.everything and not everything:
        err_console.print(
            "[bold red]error:[/bold red] select dead letters with a filter, or pass --all"
        )
        raise typer.Exit(2)
    settings = load_settings()
    codec = build_codec(settings)  # one codec reads and writes: a mock:// registry is per instance
    replayed = read_replayed(settings, timeout=timeout)
    selected = (
        dl
        for dl in read_deadletters(settings, codec=codec, timeout=timeout)
        if selection.matches(dl)
    )
    plan = plan_replay(selected, replayed, force=force)
    sent = not dry_run and bool(plan.send)
    if sent:
        with progress(err_console if as_json else console, "replay") as bar:
            task = bar.add_task("replay", total=len(plan.send))
            send_replays(
                settings,
                plan.send,
                codec=codec,
                on_progress=lambda done, _: bar.update(task, completed=done),
            )
    if as_json:
        print(json.dumps(plan.as_dict(sent=sent), indent=2))
    else:
        console.print(replay_view(plan, sent=sent, topic=settings.topics.deferred, show=show))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
