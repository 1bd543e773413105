"""`mw-gateway bulk`: files of items -> the typed bulk client -> the real simulator, chunked at 10,000."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import httpx

from gateway.bulk import build_items, build_rows, cmd_bulk
from gateway.cmms import mw_bulk as b
from gateway.config import load_config
from gateway.sim.mobility_work import Fault, MobilityWorkSim, run_mobility_work_sim

KEY = "bulk-test-key-0123456789"


def config_file(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"gateway: {{id: gw}}\ncmms: {{kind: mobility_work, url: '{url}', api_key: '{KEY}'}}\n")
    (tmp_path / "rules").mkdir(exist_ok=True)
    return path


async def test_25001_stock_rows_are_three_requests(tmp_path: Path) -> None:
    stock = tmp_path / "stock.csv"
    stock.write_text("article,quantity\n" + "".join(f"ART-{i},{i % 7}\n" for i in range(25_001)))
    async with run_mobility_work_sim(api_key=KEY) as sim:
        config = load_config(config_file(tmp_path, sim.url))
        out = io.StringIO()
        assert await cmd_bulk(config, "update-stock", stock, out=out) == 0
        assert [len(r.items) for r in sim.state.bulk] == [10_000, 10_000, 5_001]
        assert sim.state.bulk[0].items[3] == {
            "id": {"type": "externalReference", "value": "ART-3"},
            "quantity": 3,
        }
        assert "25001 item(s) in 3 request(s)" in out.getvalue() and "0 refused" in out.getvalue()


async def test_spare_parts_with_prices_in_minor_units(tmp_path: Path) -> None:
    parts = tmp_path / "parts.json"
    parts.write_text(
        json.dumps(
            [
                {
                    "external_reference": "LUBE-5L",
                    "name": "Lubricant 5 L",
                    "unit_price": "12.50",
                    "currency": "EUR",
                    "location": "Main store",
                    "quantity": 4,
                    "minimum_stock": 2,
                },
            ]
        )
    )
    async with run_mobility_work_sim(api_key=KEY) as sim:
        config = load_config(config_file(tmp_path, sim.url))
        assert await cmd_bulk(config, "create-spare-parts", parts, out=io.StringIO()) == 0
        (request,) = sim.state.bulk
        assert request.items == [
            {
                "externalReference": "LUBE-5L",
                "name": "Lubricant 5 L",
                "unitPrice": {"amount": 1250, "currency": "EUR"},
                "currentStock": {"location": "Main store", "quantity": 4},
                "minimumStock": 2,
            }
        ]


async def test_dry_run_prints_what_is_sent_with_the_configured_equipment_identifier(tmp_path: Path) -> None:
    """Before: the dry run always showed {"type": "external"}; `equipment_identifier: plain` sent "EQ-1"."""
    updates = tmp_path / "equipment.csv"
    updates.write_text("id,name\nEQ-1,Press one\n")
    async with run_mobility_work_sim(api_key=KEY) as sim:
        path = config_file(tmp_path, sim.url)
        path.write_text(path.read_text().replace("api_key:", "equipment_identifier: plain, api_key:"))
        config = load_config(path)
        dry = io.StringIO()
        assert await cmd_bulk(config, "update-equipment", updates, dry_run=True, out=dry) == 0
        assert sim.state.bulk == []
        assert await cmd_bulk(config, "update-equipment", updates, out=io.StringIO()) == 0
        assert json.loads(dry.getvalue()) == [r.items for r in sim.state.bulk]
        assert sim.state.bulk[0].items == [{"id": "EQ-1", "name": "Press one"}]


def test_every_bad_row_is_reported_with_its_line_and_nothing_is_built(tmp_path: Path) -> None:
    path = tmp_path / "parts.csv"
    path.write_text(
        "external_reference,name,unit_price,location,quantity\n"
        "A,Alpha,1.5,Store,3\n"
        ",Beta,2,Store,1\n"  # line 3: required column empty
        "C,Gamma,abc,Store,1\n"  # line 4: price not a number
        "D,Delta,3,Store,1.5\n"  # line 5: quantity not whole
    )
    items, problems = build_items(path, b.NewSparePart, currency="EUR")
    assert [(p.line, p.message.split(":")[0]) for p in problems] == [
        (3, "column 'external_reference' is required"),
        (4, "unit_price"),
        (5, "quantity"),
    ]
    assert len(items) == 1  # only row 2; the command refuses to send anything when problems exist


def test_cli_refuses_a_bad_file_without_sending_and_dry_run_prints_requests(tmp_path: Path) -> None:
    config = config_file(tmp_path, "http://127.0.0.1:9")  # nothing listens: any send would fail loudly
    bad = tmp_path / "stock.csv"
    bad.write_text("article,qty\nA,1\n")
    run = [sys.executable, "-m", "gateway.cli", "bulk", "-c", str(config)]
    result = subprocess.run([*run, "update-stock", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"{bad}:1:1: unknown column(s) qty" in result.stderr
    assert f"{bad}:2:1: column 'quantity' is required" in result.stderr
    assert "nothing was sent" in result.stderr
    good = tmp_path / "moves.csv"
    good.write_text("article,to,from\nLUBE-5L,Line 2 store,Main store\n")
    good.write_text(good.read_text() + "OIL-1L,Line 3 store,\n")
    result = subprocess.run(
        [*run, "relocate-spare-parts", str(good), "--dry-run", "--start-at", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        [
            {
                "id": {"type": "externalReference", "value": "LUBE-5L"},
                "from": {"name": "Main store"},
                "to": {"name": "Line 2 store"},
            },
            {"id": {"type": "externalReference", "value": "OIL-1L"}, "to": {"name": "Line 3 store"}},
        ]
    ]
    assert KEY not in result.stdout + result.stderr
    resumed = subprocess.run(
        [*run, "relocate-spare-parts", str(good), "--dry-run", "--start-at", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert [[item["id"]["value"] for item in chunk] for chunk in json.loads(resumed.stdout)] == [["OIL-1L"]]


# ----------------------------------------------------------------------------- issue 18 #14


class _ArmOnRequest(httpx.AsyncHTTPTransport):
    """A real transport that arms a simulator fault just before the Nth request goes out."""

    def __init__(self, sim: MobilityWorkSim, nth: int, fault: Fault) -> None:
        super().__init__()
        self.sim, self.nth, self.fault, self.sent = sim, nth, fault, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        if self.sent == self.nth:
            self.sim.add_fault(self.fault)
        return await super().handle_async_request(request)


async def test_a_401_on_chunk_3_of_5_names_the_rows_not_sent_and_start_at_resumes(tmp_path: Path) -> None:
    stock = tmp_path / "stock.csv"
    stock.write_text("article,quantity\n" + "".join(f"ART-{i},{i}\n" for i in range(50)))
    async with run_mobility_work_sim(api_key=KEY) as sim:
        config = load_config(config_file(tmp_path, sim.url))
        unauthorized = Fault("http_5xx", status=401, path="/partners/v1/spare-parts/stock")
        out = io.StringIO()
        code = await cmd_bulk(
            config,
            "update-stock",
            stock,
            out=out,
            chunk_size=10,
            transport=_ArmOnRequest(sim, 3, unauthorized),
        )
        report = out.getvalue()
        assert code == 1
        assert [len(r.items) for r in sim.state.bulk] == [10, 10]  # chunk 3 refused, 4 and 5 never sent
        assert "rows 21..30 (lines 22..31): HTTP 401" in report and "the run stopped here" in report
        assert "not sent: rows 31..50 (lines 32..51)" in report
        assert "resume with --start-at 21" in report

        resumed = io.StringIO()
        assert await cmd_bulk(config, "update-stock", stock, out=resumed, chunk_size=10, start_at=21) == 0
        sent = [item["id"]["value"] for r in sim.state.bulk for item in r.items]
        assert sent == [f"ART-{i}" for i in range(50)]  # every row exactly once
        assert "30 item(s) in 3 request(s)" in resumed.getvalue() and "not sent" not in resumed.getvalue()


def test_non_finite_huge_and_negative_numbers_are_refused_up_front_with_their_line(tmp_path: Path) -> None:
    stock = tmp_path / "stock.csv"
    stock.write_text("article,quantity\nA,1\nB,NaN\nC,Infinity\nD,1e400\nE,-3\nF,2\n")
    rows, problems = build_rows(stock, b.StockLevel)
    assert [(p.line, p.message.split(":")[0]) for p in problems] == [
        (3, "quantity"),
        (4, "quantity"),
        (5, "quantity"),
        (6, "quantity"),
    ]
    assert "cannot be negative" in problems[3].message and "finite" in problems[0].message
    assert [(r.number, r.line) for r in rows] == [(1, 2), (6, 7)]

    updates = tmp_path / "updates.json"
    updates.write_text(
        '[{"id": "A", "minimum_stock": NaN}, {"id": "B", "maximum_stock": Infinity},'
        ' {"id": "C", "replenishment_lot": 1e400}, {"id": "D", "unit_price": "-1", "currency": "EUR"},'
        ' {"id": "E", "custom_fields": [{"field": "f", "value": NaN}]}, {"id": "F", "minimum_stock": 2.5}]'
    )
    rows, problems = build_rows(updates, b.SparePartUpdate)
    assert [p.line for p in problems] == [1, 2, 3, 4, 5]
    assert "cannot be sent as JSON" in problems[4].message
    assert [r.item.id for r in rows] == ["F"]


async def test_a_file_with_a_nan_sends_nothing(tmp_path: Path) -> None:
    parts = tmp_path / "parts.csv"
    parts.write_text("id,minimum_stock\n" + "".join(f"P{i},{i}\n" for i in range(30)) + "P30,nan\n")
    async with run_mobility_work_sim(api_key=KEY) as sim:
        config = load_config(config_file(tmp_path, sim.url))
        assert await cmd_bulk(config, "update-spare-parts", parts, out=io.StringIO(), chunk_size=10) == 1
        assert sim.state.bulk == [] and sim.state.requests == []


def test_absurdly_nested_json_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    """Before: json's C decoder raised RecursionError on 100,000 nested arrays, out of `mw-gateway bulk`."""
    deep = "[" * 100_000 + "]" * 100_000
    whole = tmp_path / "deep.json"
    whole.write_text(deep)
    rows, problems = build_rows(whole, b.SparePartUpdate)
    assert rows == [] and len(problems) == 1 and "cannot read the file" in problems[0].message
    cell = tmp_path / "cell.csv"
    cell.write_text(f"id,custom_fields\nA,{'[' * 60_000 + ']' * 60_000}\nB,\n")
    rows, problems = build_rows(cell, b.SparePartUpdate)
    assert [(p.line, p.message.split(":")[0]) for p in problems] == [(2, "custom_fields")]
    assert [r.item.id for r in rows] == ["B"]
    cell.write_text(f"id,custom_fields\nA,{deep}\n")  # over the csv module's field limit (128 KiB)
    rows, problems = build_rows(cell, b.SparePartUpdate)
    assert rows == [] and "cannot read the file: field larger than field limit" in problems[0].message
