"""`mw-gateway bulk`: files of items -> the typed bulk client -> the real simulator, chunked at 10,000."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from gateway.bulk import build_items, cmd_bulk
from gateway.cmms import mw_bulk as b
from gateway.config import load_config
from gateway.sim.mobility_work import run_mobility_work_sim

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
    result = subprocess.run(
        [*run, "relocate-spare-parts", str(good), "--dry-run"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        [
            {
                "id": {"type": "externalReference", "value": "LUBE-5L"},
                "from": {"name": "Main store"},
                "to": {"name": "Line 2 store"},
            }
        ]
    ]
    assert KEY not in result.stdout + result.stderr
