"""`aimis` — operator CLI. Errors print one line with the error code and exit non-zero."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cli import runenv
from cli.client import Api, CliError
from cli.dlq import dlq_app
from cli.outbox import outbox_app
from shared import auth
from shared.config import Settings

app = typer.Typer(help="Operate AIMIS Billing: tokens, agreements, orders, balances, usage, ledger, dead letters, "
                       "parked outbox rows.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
token_app = typer.Typer(help="Bearer tokens (HS256, AIMIS_AUTH_SECRET).", no_args_is_help=True)
agreement_app = typer.Typer(help="Offline cooperation agreements.", no_args_is_help=True)
order_app = typer.Typer(help="Orders: place, pay, import, show.", no_args_is_help=True)
usage_app = typer.Typer(help="Play the imaging platform: send usage events.", no_args_is_help=True)
ledger_app = typer.Typer(help="The ledger feed.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(agreement_app, name="agreement")
app.add_typer(order_app, name="order")
app.add_typer(usage_app, name="usage")
app.add_typer(ledger_app, name="ledger")
app.add_typer(dlq_app, name="dlq")
app.add_typer(outbox_app, name="outbox")
out = Console()
err = Console(stderr=True, soft_wrap=True, highlight=False)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _fail(e: Exception) -> None:
    err.print(f"[bold red]error[/] {e}", highlight=False)
    raise typer.Exit(1)


def _api() -> Api:
    return Api.admin()


def _parse_lines(lines: list[str]) -> list[dict[str, Any]]:
    """`SKU[:key=value,...]`, e.g. `CI-QTY:quantity=10000,storage_years=5` or `SW-OPT:months=12,feature=cloud_film`."""
    parsed = []
    for spec in lines:
        sku, _, rest = spec.partition(":")
        line: dict[str, Any] = {"sku": sku}
        for kv in filter(None, rest.split(",")):
            k, _, v = kv.partition("=")
            line[k] = int(v) if v.isdigit() else v
        parsed.append(line)
    return parsed


@app.callback()
def _load_run_env() -> None:
    """Read .run/env (written by `make up`) for the AIMIS_* variables not set here."""
    runenv.load()


@token_app.command("mint")
def token_mint(
    admin: bool = typer.Option(False, "--admin", help="an admin token"),
    org: str | None = typer.Option(None, "--org", help="a token scoped to this org"),
    role: str | None = typer.Option(None, "--role", help="finance | platform (SPEC 7.4)"),
) -> None:
    if sum((admin, bool(org), bool(role))) != 1 or role not in (None, "finance", "platform"):
        _fail(CliError(2, "USAGE", "give exactly one of --admin, --org ORG or --role finance|platform", None))
    s = Settings()
    if org:
        print(auth.mint(s.auth_secret, "org", org))
    else:
        print(auth.mint(s.auth_secret, "admin" if admin else role))  # type: ignore[arg-type]


@agreement_app.command("record")
def agreement_record(
    org: str,
    ref: str = typer.Option(None, "--ref", help="agreement reference (default: AGR-<org>)"),
    signed_at: str = typer.Option(None, "--signed-at", help="RFC 3339 (default: now)"),
) -> None:
    try:
        res = _api().record_agreement(org, ref or f"AGR-{org}", signed_at or _now())
    except CliError as e:
        _fail(e)
    out.print(f"agreement recorded for [bold]{org}[/]: {res['agreement_ref']} signed {res['signed_at']}")


def _print_order(o: dict[str, Any]) -> None:
    t = Table(title=f"order {o['order_id']} — {o['org_id']} — {o['status']}", show_lines=False)
    for col in ("line", "sku", "details", "price"):
        t.add_column(col, justify="right" if col == "price" else "left")
    for ln in o["lines"]:
        details = ", ".join(f"{k}={v}" for k, v in ln.items() if k not in ("line", "sku", "price") and v is not None)
        t.add_row(str(ln["line"]), ln["sku"], details, ln["price"])
    t.add_row("", "", "[bold]total (USD)[/]", f"[bold]{o['total']}[/]")
    out.print(t)


@order_app.command("place")
def order_place(
    org: str,
    line: list[str] = typer.Option(..., "--line", help="SKU[:key=value,...], repeatable"),
    order_id: str | None = typer.Option(None, "--id"),
) -> None:
    try:
        _print_order(_api().place_order(org, _parse_lines(line), order_id))
    except CliError as e:
        _fail(e)


@order_app.command("pay")
def order_pay(order_id: str, amount: str | None = typer.Option(None, help="default: the order total"),
              ref: str | None = typer.Option(None, "--ref")) -> None:
    try:
        api = _api()
        total = amount or api.order(order_id)["total"]
        _print_order(api.pay(order_id, total, ref or f"PAY-{order_id}"))
    except CliError as e:
        _fail(e)


@order_app.command("import")
def order_import(
    org: str,
    line: list[str] = typer.Option(..., "--line"),
    paid_at: str = typer.Option(..., "--paid-at", help="RFC 3339, not in the future"),
    order_id: str | None = typer.Option(None, "--id"),
    ref: str | None = typer.Option(None, "--ref"),
) -> None:
    oid = order_id or f"IMP-{uuid.uuid4().hex[:10]}"
    try:
        _print_order(_api().import_order(oid, org, _parse_lines(line), paid_at, ref or f"OFFLINE-{oid}"))
    except CliError as e:
        _fail(e)


@order_app.command("show")
def order_show(order_id: str) -> None:
    try:
        _print_order(_api().order(order_id))
    except CliError as e:
        _fail(e)


def render_balance(b: dict[str, Any], console: Console = out) -> None:
    for resource, r in b["resources"].items():
        arrears = f"[bold red]{r['arrears']}[/]" if r["arrears"] else "0"
        head = (f"[bold]{resource}[/]  available {r['available']}  used {r['used']}  arrears {arrears}  "
                f"purchased {r['purchased']}  forfeited {r['forfeited']}")
        if r.get("offline_licence"):
            head += "  [green]offline licence (AI-PERPETUAL)[/]"
        t = Table(title=head, title_justify="left")
        for col in ("lot", "sku", "quantity", "remaining", "storage", "credited", "expires", "status"):
            t.add_column(col)
        for lot in r["lots"]:
            t.add_row(lot["lot_id"], lot["sku"], str(lot["quantity"]), str(lot["remaining"]),
                      f"{lot['storage_years']} y" if lot.get("storage_years") else "-",
                      lot["credited_at"][:19], lot["expires_at"][:19], lot["status"])
        console.print(t)


@app.command("balance")
def balance(org: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """The account: a table per resource with every lot; arrears highlighted."""
    try:
        b = _api().balances(org)
    except CliError as e:
        _fail(e)
    if as_json:
        print(json.dumps(b, indent=2))
    else:
        out.print(f"[bold]{org}[/]")
        render_balance(b)


def usage_event(org: str, resource: str, *, quantity: int = 1, channel: str = "online",
                occurred_at: str | None = None, event_id: str | None = None) -> dict[str, Any]:
    from contracts.events import usage_type

    return {
        "specversion": "1.0", "id": event_id or str(uuid.uuid4()), "source": "/aimis-cli/platform",
        "type": usage_type(resource), "subject": org, "time": occurred_at or _now(),
        "datacontenttype": "application/json",
        "data": {"quantity": quantity, "inspection_id": f"INS-{uuid.uuid4().hex[:12]}", "channel": channel},
    }


@usage_app.command("send")
def usage_send(
    org: str,
    inspections: int = typer.Option(0, "--inspections"),
    ai_reviews: int = typer.Option(0, "--ai-reviews"),
    rate: float = typer.Option(0, "--rate", help="events per second (0: as fast as possible)"),
    offline: bool = typer.Option(False, "--offline", help="AI reviews on the offline channel"),
) -> None:
    """Send usage CloudEvents to aimis.usage.v1, keyed by org, with a progress bar."""
    from rich.progress import Progress

    from contracts import topics

    events = [usage_event(org, "cloud_inspection") for _ in range(inspections)]
    events += [usage_event(org, "ai_review", channel="offline" if offline else "online") for _ in range(ai_reviews)]

    async def run() -> None:
        from aiokafka import AIOKafkaProducer

        s = Settings()
        p = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", enable_idempotence=True,
                             **s.kafka_options("platform"))
        await p.start()
        try:
            started = time.monotonic()
            with Progress(console=out) as prog:
                task = prog.add_task(f"usage for {org}", total=len(events))
                for i, ev in enumerate(events, 1):
                    await p.send(topics.USAGE, json.dumps(ev).encode(), key=org.encode())
                    prog.advance(task)
                    if rate > 0:
                        ahead = i / rate - (time.monotonic() - started)
                        if ahead > 0:
                            await asyncio.sleep(ahead)  # pacing to the requested rate
            await p.flush()
        finally:
            await p.stop()

    try:
        asyncio.run(run())
    except Exception as e:  # noqa: BLE001 - one readable line
        _fail(CliError(0, "KAFKA_ERROR", str(e)))
    out.print(f"sent {inspections} inspection(s) and {ai_reviews} AI review(s) for {org}")


@ledger_app.command("tail")
def ledger_tail(
    org: str | None = typer.Option(None, "--org", help="only this org"),
    from_beginning: bool = typer.Option(False, "--from-beginning"),
    count: int = typer.Option(0, "--count", help="stop after N entries (0: follow)"),
) -> None:
    """Follow aimis.ledger.v1 and print one line per entry."""
    from aiokafka import AIOKafkaConsumer

    from contracts import topics

    async def run() -> None:
        s = Settings()
        c = AIOKafkaConsumer(topics.LEDGER, bootstrap_servers=s.kafka_bootstrap,
                             auto_offset_reset="earliest" if from_beginning else "latest",
                             enable_auto_commit=False, group_id=None, **s.kafka_options("analytics"))
        await c.start()
        seen = 0
        try:
            async for rec in c:
                try:
                    ev = json.loads(rec.value)
                except ValueError:
                    continue
                if org and ev.get("subject") != org:
                    continue
                d = ev.get("data", {})
                summary = ", ".join(
                    f"{k}={v}" for k, v in d.items() if k != "org_id" and not isinstance(v, (list, dict))
                )
                kind = ev["type"].removeprefix("aimis.ledger.")
                out.print(f"{ev['time'][:19]}  {ev['subject']:<16} [cyan]{kind}[/]  {summary}",
                          highlight=False)
                seen += 1
                if count and seen >= count:
                    return
        finally:
            await c.stop()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


def _instant(value: str, name: str) -> datetime:
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an RFC 3339 time or a date", param_hint=name) from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


@ledger_app.command("export")
def ledger_export(
    org: str = typer.Option(..., "--org", help="the organisation"),
    since: str | None = typer.Option(None, "--from", help="first time included (RFC 3339 or a date, UTC)"),
    until: str | None = typer.Option(None, "--to", help="first time excluded (RFC 3339 or a date, UTC)"),
    fmt: str = typer.Option("parquet", "--format", help="parquet or csv"),
    output: str | None = typer.Option(None, "--output", "-o", help="file (default: ledger-ORG.FORMAT)"),
) -> None:
    """One row per ledger entry of ORG in [--from, --to), read through the entitlement API
    (GET /v1/orgs/{org}/ledger, following `next`), as Parquet or CSV: docs/analytics.md."""
    from pathlib import Path

    from cli import analytics

    if fmt not in ("parquet", "csv"):
        raise typer.BadParameter("parquet or csv", param_hint="--format")
    lo = _instant(since, "--from") if since else None
    hi = _instant(until, "--to") if until else None
    path = Path(output or f"ledger-{org}.{fmt}")
    try:
        rows = [analytics.row_of_api_entry(org, e) for e in _api().ledger_all(org)]
    except CliError as e:
        _fail(e)
    rows = [r for r in rows if (lo is None or r["time"] >= lo) and (hi is None or r["time"] < hi)]
    n = analytics.write(rows, path, fmt)
    err.print(f"{n} ledger entries of {org} -> {path}")


@ledger_app.command("land")
def ledger_land(
    out_dir: str = typer.Option(..., "--out", help="folder of Parquet files (and _offsets.json)"),
    follow: bool = typer.Option(False, "--follow", help="keep consuming (default: stop when caught up)"),
) -> None:
    """Consume aimis.ledger.v1 into Parquet files (one per poll), as the `analytics` Kafka principal,
    resuming from the offsets recorded in OUT/_offsets.json: docs/analytics.md."""
    from pathlib import Path

    from aiokafka import AIOKafkaConsumer

    from cli import analytics
    from contracts import topics

    out_dir_p = Path(out_dir)
    offsets_file = out_dir_p / "_offsets.json"
    done: dict[str, int] = json.loads(offsets_file.read_text()) if offsets_file.exists() else {}

    async def run() -> int:
        s = Settings()
        # subscribed without a group: every partition is assigned to this consumer once metadata arrives
        c = AIOKafkaConsumer(topics.LEDGER, bootstrap_servers=s.kafka_bootstrap, enable_auto_commit=False,
                             group_id=None, auto_offset_reset="earliest", **s.kafka_options("analytics"))
        await c.start()
        landed = 0
        try:
            deadline = time.monotonic() + 30
            while not c.assignment():
                if time.monotonic() > deadline:
                    raise CliError(0, "NO_PARTITIONS", f"{topics.LEDGER}: no partition assigned within 30 s")
                await asyncio.sleep(0.1)
            tps = sorted(c.assignment())
            for tp in tps:
                if str(tp.partition) in done:
                    c.seek(tp, done[str(tp.partition)])
                else:
                    await c.seek_to_beginning(tp)
            end = await c.end_offsets(tps)
            while True:
                if not follow and all([await c.position(tp) >= end[tp] for tp in tps]):
                    return landed
                batch = await c.getmany(timeout_ms=1000, max_records=10_000)
                table, skipped = analytics.table_of_records(
                    [(f"{tp.partition}:{rec.offset}", rec.value) for tp, recs in batch.items() for rec in recs])
                for position in skipped:
                    err.print(f"skipped an unreadable record at {position}")
                for tp, recs in batch.items():
                    done[str(tp.partition)] = recs[-1].offset + 1
                if table.num_rows:
                    name = f"ledger-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}.parquet"
                    landed += analytics.write_table(table, out_dir_p / name)
                if batch:  # after the file: a crash in between lands the batch again (dedupe on event_id)
                    offsets_file.write_text(json.dumps(done, sort_keys=True))
        finally:
            await c.stop()

    try:
        n = asyncio.run(run())
        err.print(f"landed {n} ledger entries in {out_dir_p}")
    except CliError as e:
        _fail(e)
    except KeyboardInterrupt:
        pass


def main() -> None:
    try:
        app()
    except CliError as e:
        err.print(f"error {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
