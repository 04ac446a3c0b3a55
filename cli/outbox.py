"""`aimis outbox parked|republish|discard` (SPEC 7.2): the parked outbox rows of a service, and
what an admin decides once their cause is fixed. Through each service's admin routes
(`/v1/admin/outbox/parked...`) with an admin token: the service records every decision."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from cli.client import Api, CliError

SERVICES = ("order", "entitlement", "metering", "expiry")
outbox_app = typer.Typer(help="Parked outbox rows: list them, re-publish or discard one (admin).",
                         no_args_is_help=True)
out = Console()
err = Console(stderr=True, soft_wrap=True, highlight=False)

Service = typer.Option(..., "--service", help="order, entitlement, metering or expiry")
Reason = typer.Option(..., "--reason", help="why (recorded with the decision)")


def _call(service: str, method: str, path: str, **kw: object) -> object:
    if service not in SERVICES:
        err.print(f"[bold red]error[/] unknown service {service!r} (one of {', '.join(SERVICES)})")
        raise typer.Exit(1)
    try:
        return Api.admin().call(service, method, path, **kw)
    except CliError as e:
        err.print(f"[bold red]error[/] {e}")
        raise typer.Exit(1) from None


@outbox_app.command("parked")
def parked(service: str = Service, as_json: bool = typer.Option(False, "--json", help="the raw answer")) -> None:
    """List a service's parked rows, oldest first."""
    body = _call(service, "GET", "/v1/admin/outbox/parked")
    assert isinstance(body, dict)
    if as_json:
        typer.echo(json.dumps(body))
        return
    t = Table("seq", "event id", "topic", "org", "bytes", "parked at", "why")
    for r in body["rows"]:
        t.add_row(str(r["seq"]), r["event_id"], r["topic"], r["key"], str(r["size"]), r["parked_at"],
                  r["park_reason"][:60])
    out.print(t)
    out.print(f"{body['count']} parked row(s) in {body['service']}")


def _resolve(service: str, seq: int, action: str, reason: str) -> None:
    done = _call(service, "POST", f"/v1/admin/outbox/parked/{seq}/{action}", json={"reason": reason})
    assert isinstance(done, dict)
    verb = "re-published (the relay sends it next)" if action == "republish" else "discarded"
    out.print(f"outbox row {done['seq']} of {service} ({done['event_id']}, {done['topic']}) {verb}", highlight=False)


@outbox_app.command("republish")
def republish(service: str = Service, seq: int = typer.Option(..., "--seq"), reason: str = Reason) -> None:
    """Send a parked row again once its cause is fixed (once: a second time is refused)."""
    _resolve(service, seq, "republish", reason)


@outbox_app.command("discard")
def discard(service: str = Service, seq: int = typer.Option(..., "--seq"), reason: str = Reason) -> None:
    """Give up on a parked row: kept, never published, no longer listed."""
    _resolve(service, seq, "discard", reason)
