"""The ledger in analytics tools against the session's real stack (issue 15, docs/analytics.md):
`aimis ledger export` to Parquet and CSV through the entitlement API, `aimis ledger land` from
aimis.ledger.v1 into Parquet files, and the two DuckDB queries of docs/analytics.md run exactly as
written there."""

from __future__ import annotations

import asyncio
import csv
import re
import uuid
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cli.analytics import COLUMNS
from cli.main import app
from contracts.events import LotCreditedData, UsageDeductedData
from tests.e2e.conftest import SECRET, Stack
from tests.e2e.helpers import buy, eventually, ledger, now, of_kind, onboard, usage
from tests.support.infra import ROOT

pytestmark = pytest.mark.e2e

DOC = ROOT / "docs" / "analytics.md"


def doc_query(title: str, lake: Path) -> str:
    """The ```sql block of docs/analytics.md whose first line is `-- <title>`, on the folder `lake`."""
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)
    sql = next(b for b in blocks if b.startswith(f"-- {title}\n"))
    assert "'lake/*.parquet'" in sql
    return sql.replace("'lake/*.parquet'", f"'{lake}/*.parquet'")


def cli(stack: Stack, *args: str) -> str:
    env = {f"AIMIS_{s.upper()}_URL": url for s, url in stack.urls.items()}
    env |= {"AIMIS_AUTH_SECRET": SECRET, "AIMIS_KAFKA_BOOTSTRAP": stack.bootstrap}
    r = CliRunner().invoke(app, list(args), env=env)
    assert r.exit_code == 0, (r.output, r.exception)
    return r.output


async def test_export_land_and_query_the_ledger(stack: Stack, tmp_path: Path):
    in_arrears, paying = (f"ana-{uuid.uuid4().hex[:8]}" for _ in range(2))
    for org in (in_arrears, paying):
        await onboard(stack.admin, org)
    await buy(stack.admin, paying, [{"sku": "AI-QTY", "quantity": 1000}])
    await eventually(lambda: of_kind(ledger(stack.admin, paying), LotCreditedData), bool)
    # three inspections with no lot: all three into arrears; two AI reviews from the paid lot
    stack.admin.send_usage([usage(in_arrears, quantity=q) for q in (1, 2, 4)])
    stack.admin.send_usage([usage(paying, "ai_review") for _ in range(2)])
    await eventually(lambda: of_kind(ledger(stack.admin, in_arrears), UsageDeductedData), lambda d: len(d) == 3)
    await eventually(lambda: of_kind(ledger(stack.admin, paying), UsageDeductedData), lambda d: len(d) == 2)

    # -- export through the API
    entries = ledger(stack.admin, in_arrears)
    cli(stack, "ledger", "export", "--org", in_arrears, "--format", "parquet", "-o", str(tmp_path / "a.parquet"))
    table = pq.read_table(tmp_path / "a.parquet")
    assert table.column_names == COLUMNS and table.num_rows == len(entries)
    rows = table.to_pylist()
    assert {r["event_id"] for r in rows} == {e["id"] for e in entries}
    deducted = [r for r in rows if r["type"] == "aimis.ledger.usage_deducted"]
    assert sorted((r["quantity"], r["arrears_quantity"]) for r in deducted) == [(1, 1), (2, 2), (4, 4)]
    assert all(r["usage_id"] and r["resource"] == "cloud_inspection" and r["org_id"] == in_arrears for r in deducted)

    cli(stack, "ledger", "export", "--org", paying, "--format", "csv", "-o", str(tmp_path / "p.csv"))
    with (tmp_path / "p.csv").open() as f:
        csv_rows = list(csv.DictReader(f))
    assert list(csv_rows[0]) == COLUMNS and len(csv_rows) == len(ledger(stack.admin, paying))
    used = [r for r in csv_rows if r["type"] == "aimis.ledger.usage_deducted"]
    credited = next(r for r in csv_rows if r["type"] == "aimis.ledger.lot_credited")
    assert [(r["quantity"], r["arrears_quantity"], r["lot_id"]) for r in used] == [("1", "0", credited["lot_id"])] * 2

    # --from/--to: an empty window still writes the columns; a window around now keeps every entry
    later = (now().replace(microsecond=0).isoformat(), "2099-01-01")
    cli(stack, "ledger", "export", "--org", paying, "--from", later[1], "--format", "csv", "-o", str(tmp_path / "e.csv"))
    assert (tmp_path / "e.csv").read_text().strip() == ",".join(COLUMNS)
    cli(stack, "ledger", "export", "--org", paying, "--from", "2020-01-01", "--to", later[1],
        "-o", str(tmp_path / "w.parquet"))
    assert pq.read_table(tmp_path / "w.parquet").num_rows == len(csv_rows)

    # -- land the topic, twice: the second run resumes and lands nothing already landed
    lake = tmp_path / "lake"
    # (in a thread: the command runs its own event loop, as it does from a shell)
    await asyncio.to_thread(cli, stack, "ledger", "land", "--out", str(lake))
    assert (lake / "_offsets.json").exists()
    files = set(lake.glob("*.parquet"))
    await asyncio.to_thread(cli, stack, "ledger", "land", "--out", str(lake))
    assert set(lake.glob("*.parquet")) == files

    # -- the documented queries
    per_day = duckdb.sql(doc_query("usage per day", lake)).fetchall()
    today = {(org, res, used, arrears) for org, res, _day, used, arrears in per_day if org in (in_arrears, paying)}
    assert today == {(in_arrears, "cloud_inspection", 7, 7), (paying, "ai_review", 2, 0)}
    arrears = dict(((org, res), n) for org, res, n in duckdb.sql(doc_query("arrears per org", lake)).fetchall())
    assert arrears.get((in_arrears, "cloud_inspection")) == 7 and (paying, "ai_review") not in arrears
    balances = stack.admin.balances(in_arrears)["resources"]["cloud_inspection"]
    assert balances["arrears"] == 7


def test_the_readme_shows_the_documented_query():
    """README's DuckDB example is docs/analytics.md's (tested above), word for word."""
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)
    documented = next(b for b in blocks if b.startswith("-- usage per day\n")).split("\n", 1)[1]
    assert documented in re.findall(r"```sql\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
