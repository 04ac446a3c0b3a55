"""cli/analytics.py: ledger entries as flat rows, written as Parquet and CSV (issue 15)."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cli import analytics
from cli.main import app
from contracts import examples

DEDUCTED = examples.EVENTS["aimis.ledger.usage_deducted"][0]


def test_a_deduction_from_several_lots_keeps_every_lot_and_the_whole_data():
    ev = json.loads(json.dumps(DEDUCTED))
    ev["data"]["allocations"] = [{"lot_id": "L1", "quantity": 2}, {"lot_id": "L2", "quantity": 1},
                                 {"lot_id": "L1", "quantity": 1}]
    ev["data"]["quantity"], ev["data"]["arrears_quantity"] = 5, 1
    r = analytics.row_of_event(ev)
    assert (r["lot_id"], r["quantity"], r["arrears_quantity"]) == ("L1,L2", 5, 1)
    assert r["org_id"] == ev["subject"] and r["usage_id"] == "u-8812" and r["resource"] == "cloud_inspection"
    assert r["time"] == datetime(2026, 10, 3, 10, 0, 2, tzinfo=timezone.utc)
    assert json.loads(r["data"]) == ev["data"]


def test_an_api_entry_and_the_same_event_give_the_same_row():
    entry = examples.HTTP["LedgerEntry"][0]
    assert analytics.row_of_api_entry(DEDUCTED["subject"], entry) == analytics.row_of_event(DEDUCTED)


def test_entries_without_usage_fields_leave_those_columns_empty():
    r = analytics.row(event_id="e1", type="aimis.ledger.lot_expired", time="2027-01-01T00:00:00Z", org_id="o",
                      resource=None, data={"lot_id": "L9", "resource": "ai_review", "forfeited": 40})
    assert (r["lot_id"], r["forfeited"], r["resource"]) == ("L9", 40, "ai_review")
    assert r["usage_id"] is None and r["quantity"] is None and r["arrears_quantity"] is None


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_writes_the_same_columns_even_when_empty(tmp_path: Path, fmt: str):
    rows = [analytics.row_of_event(DEDUCTED)]
    for name, rs in (("one", rows), ("none", [])):
        path = tmp_path / f"{name}.{fmt}"
        assert analytics.write(rs, path, fmt) == len(rs)
        if fmt == "parquet":
            t = pq.read_table(path)
            assert t.schema.equals(analytics.SCHEMA) and t.to_pylist() == rs
        else:
            with path.open() as f:
                got = list(csv.DictReader(f))
            assert f.name and (got == [] if not rs else got[0]["usage_id"] == "u-8812")
            assert path.read_text().splitlines()[0] == ",".join(analytics.COLUMNS)


def test_an_unknown_format_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="parquet or csv"):
        analytics.write([], tmp_path / "x.xlsx", "xlsx")
    r = CliRunner().invoke(app, ["ledger", "export", "--org", "o", "--format", "xlsx", "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and not (tmp_path / "x").exists()


def test_a_bad_time_window_is_refused_before_any_request(tmp_path: Path):
    r = CliRunner().invoke(app, ["ledger", "export", "--org", "o", "--from", "yesterday", "-o", str(tmp_path / "x")],
                           env={"AIMIS_ENTITLEMENT_URL": "http://127.0.0.1:9"})
    assert r.exit_code == 2 and "yesterday" in r.output and not (tmp_path / "x").exists()


def _spoilt(**changes: object) -> bytes:
    ev = json.loads(json.dumps(DEDUCTED))
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = ev
        for p in parents:
            target = target[p]
        target[leaf] = value
    return json.dumps(ev).encode()


HOSTILE_LEDGER_RECORDS = {
    "not JSON": b"\xff\xfe not json",
    "empty value": None,
    "a JSON list": b"[1, 2]",
    "no id": json.dumps({k: v for k, v in DEDUCTED.items() if k != "id"}).encode(),
    "data is a list": _spoilt(data=[1]),
    "lone surrogate in the id": _spoilt(id="\ud800h-1"),  # json.dumps escapes it; json.loads gives it back
    "lone surrogate in the data": _spoilt(data__usage_id="u-\udfff"),
    "quantity beyond 64 bits": _spoilt(data__quantity=2**70),
    "quantity as text": _spoilt(data__quantity="many"),
    "time not a time": _spoilt(time="yesterday"),
    "org id a number": _spoilt(subject=7),
    "deep nesting": b'{"id": "x", "type": "t", "time": "2026-01-01T00:00:00Z", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


def test_landing_skips_every_record_no_table_can_hold_and_keeps_the_rest(tmp_path: Path):
    """The ledger topic may hold anything a producer with access wrote: each such record is reported
    by its position and the good ones around it are landed (found when the hostile suite's ledger
    records reached `aimis ledger land` in the same test session)."""
    good = json.dumps(DEDUCTED).encode()
    records = [("0:0", good)] + [(f"0:{i + 1}", v) for i, v in enumerate(HOSTILE_LEDGER_RECORDS.values())]
    records.append((f"0:{len(records)}", good))
    table, skipped = analytics.table_of_records(records)
    assert skipped == [p for p, _ in records[1:-1]], dict(zip(HOSTILE_LEDGER_RECORDS, skipped, strict=False))
    assert analytics.write_table(table, tmp_path / "l.parquet") == 2
    assert pq.read_table(tmp_path / "l.parquet").column("usage_id").to_pylist() == ["u-8812", "u-8812"]
