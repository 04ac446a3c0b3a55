"""The ledger as flat rows for analytics tools (issue 15; docs/analytics.md).

One row per ledger entry, the same columns whether it comes from the entitlement HTTP API
(`aimis ledger export`) or from the topic aimis.ledger.v1 (`aimis ledger land`), written as Parquet
(pyarrow) or CSV. Nested parts of an entry (allocations, offsets) stay whole in the `data` column
as JSON; the columns lift what queries group and sum by."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema([
    ("time", pa.timestamp("us", tz="UTC")),  # when the ledger recorded the entry
    ("org_id", pa.string()),
    ("event_id", pa.string()),  # unique: de-duplicate on it (landing is at-least-once)
    ("type", pa.string()),  # aimis.ledger.<kind>
    ("resource", pa.string()),  # cloud_inspection | ai_review (null for licences and services)
    ("usage_id", pa.string()),
    ("quantity", pa.int64()),  # units deducted, credited, offset or rejected
    ("arrears_quantity", pa.int64()),  # of `quantity`, what went into arrears (usage_deducted)
    ("lot_id", pa.string()),  # the lot; several lots of one deduction: comma-separated
    ("order_id", pa.string()),
    ("sku", pa.string()),
    ("channel", pa.string()),
    ("occurred_at", pa.timestamp("us", tz="UTC")),  # when the use happened (usage entries)
    ("reason", pa.string()),  # usage_rejected
    ("forfeited", pa.int64()),  # lot_expired: units lost at expiry
    ("data", pa.string()),  # the entry's whole data, JSON
])
COLUMNS = SCHEMA.names


def _ts(v: Any) -> datetime | None:
    if v is None or isinstance(v, datetime):
        return v
    return datetime.fromisoformat(str(v).replace("Z", "+00:00"))


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


def row(*, event_id: str, type: str, time: Any, org_id: str | None, resource: str | None,
        data: dict[str, Any]) -> dict[str, Any]:
    """One flat row of a ledger entry."""
    lots = [a["lot_id"] for a in data.get("allocations") or [] if isinstance(a, dict) and "lot_id" in a]
    lot_id = data.get("lot_id") or (",".join(dict.fromkeys(lots)) if lots else None)
    arrears = data.get("arrears_quantity")
    if arrears is None and type == "aimis.ledger.usage_deducted":
        arrears = 0
    return {
        "time": _ts(time), "org_id": org_id or data.get("org_id"), "event_id": event_id, "type": type,
        "resource": resource or data.get("resource"), "usage_id": data.get("usage_id"),
        "quantity": _int(data.get("quantity")), "arrears_quantity": _int(arrears), "lot_id": lot_id,
        "order_id": data.get("order_id"), "sku": data.get("sku"), "channel": data.get("channel"),
        "occurred_at": _ts(data.get("occurred_at")), "reason": data.get("reason"),
        "forfeited": _int(data.get("forfeited")), "data": json.dumps(data, sort_keys=True),
    }


def row_of_api_entry(org_id: str, e: dict[str, Any]) -> dict[str, Any]:
    """A row from an entry of GET /v1/orgs/{org}/ledger."""
    return row(event_id=e["id"], type=e["type"], time=e["time"], org_id=org_id, resource=e.get("resource"),
               data=e.get("data") or {})


def row_of_event(ev: dict[str, Any]) -> dict[str, Any]:
    """A row from a CloudEvent of aimis.ledger.v1."""
    data = ev.get("data") or {}
    return row(event_id=ev["id"], type=ev["type"], time=ev["time"], org_id=ev.get("subject"),
               resource=data.get("resource"), data=data)


_UNWRITABLE = (pa.ArrowException, UnicodeEncodeError, OverflowError, TypeError, ValueError, AttributeError,
               KeyError, RecursionError)


def table_of_records(records: Sequence[tuple[str, bytes | None]]) -> tuple[pa.Table, list[str]]:
    """The ledger rows of records of aimis.ledger.v1, given as (position, value), as a table; and
    the positions of the records that are no ledger entry a table can hold (not JSON, not an event,
    a string that is no UTF-8 text such as a lone surrogate, a number beyond 64 bits). Whatever a
    producer wrote to the topic, landing goes on: such records are reported, never fatal."""
    rows: list[dict[str, Any]] = []
    positions: list[str] = []
    skipped: list[str] = []
    for position, value in records:
        try:
            rows.append(row_of_event(json.loads(value or b"")))
            positions.append(position)
        except _UNWRITABLE:
            skipped.append(position)
    try:
        return pa.Table.from_pylist(rows, schema=SCHEMA), skipped  # the usual case: every row fits at once
    except _UNWRITABLE:
        pass
    good = []
    for r, position in zip(rows, positions, strict=True):
        try:
            pa.Table.from_pylist([r], schema=SCHEMA)
            good.append(r)
        except _UNWRITABLE:
            skipped.append(position)
    order = {position: i for i, (position, _) in enumerate(records)}
    return pa.Table.from_pylist(good, schema=SCHEMA), sorted(skipped, key=order.__getitem__)


def write(rows: Iterable[dict[str, Any]], path: Path, fmt: str) -> int:
    """Write rows as `parquet` or `csv`; return how many. An empty export still has the columns."""
    rows = list(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    elif fmt == "csv":
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            for r in rows:
                w.writerow({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()})
    else:
        raise ValueError(f"unknown format {fmt!r}: parquet or csv")
    return len(rows)


def write_table(table: pa.Table, path: Path) -> int:
    """Write a table of ledger rows as Parquet; return how many rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return int(table.num_rows)
