"""The webhook fixtures are the documents' own sample payloads, verbatim."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent.parent / "fixtures" / "mobility_work"
OLD_DOC = FIXTURES / "source" / "000_5887c1bfcdd01479.txt"
LATEST_DOC = FIXTURES / "source" / "001_db8268cebf3bd5dc.txt"

EVENTS = {
    "TaskWasScheduled",
    "TaskWasStarted",
    "TaskWasCompleted",
    "TaskWasCanceled",
    "ActivityWasAddedOnTask",
    "SparePartWasConsumed",
    "SparePartWasRestocked",
    "SparePartWasManuallyRecounted",
    "SparePartWasOutOfStock",
    "SparePartStockWasUnderMinThreshold",
}


def _line(line: str) -> str:
    """Undo the rendering's list markers: `{- "a": 1,` -> `{"a": 1,`, `}, - "b"` -> `}, "b"`."""
    line = line.strip().removeprefix("- ")
    return line.replace("}, - ", "}, ").replace("], - ", "], ").replace("{- ", "{").replace("[- ", "[")


def extract_samples(text: str) -> list[dict[str, Any]]:
    """Every webhook sample (`{- "_event"` or `{- "_type"`) of the older rendering, parsed."""
    lines = text.splitlines()
    found: list[dict[str, Any]] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith(('{- "_event"', '{- "_type"')):
            buf: list[str] = []
            for j in range(i, len(lines)):
                buf.append(_line(lines[j]))
                if lines[j].strip().startswith("}"):
                    try:
                        found.append(json.loads("\n".join(buf)))
                    except json.JSONDecodeError:
                        continue
                    i = j
                    break
        i += 1
    return found


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_every_sample_of_the_old_document_is_a_fixture_verbatim() -> None:
    samples = extract_samples(OLD_DOC.read_text(encoding="utf-8"))
    assert len(samples) == 20  # every event twice: in its section and in the Webhooks section
    assert {s["_event"] for s in samples} == EVENTS
    for sample in samples:
        fixture_text = (FIXTURES / f"{sample['_event']}.json").read_text(encoding="utf-8")
        assert json.loads(fixture_text) == sample
        assert list(json.loads(fixture_text)) == list(sample)  # key order too


def test_known_values_by_hand() -> None:
    consumed = load("SparePartWasConsumed.json")
    assert consumed["consumed"] == {"_type": "SparePartConsumption", "quantity": 3, "previousStock": 116}
    assert consumed["sparePart"]["articleCode"] == "whr484zb"
    assert load("TaskWasScheduled.json")["metadata"] == {"internalIdentifier": 1234}
    assert load("SparePartWasOutOfStock.json")["stock"]["location"]["name"] == "Allée 2 - Rang 3 - Étagère 4"
    assert load("ActivityWasAddedOnTask.json")["_metadata"] == []


def latest_samples(text: str) -> dict[str, list[tuple[str, str]]]:
    """The latest rendering's samples: event -> [(key, raw value text)], nested objects collapsed."""
    lines = text.splitlines()
    out: dict[str, list[tuple[str, str]]] = {}
    for i, line in enumerate(lines[:-1]):
        if line != "{" or not lines[i + 1].startswith('  • "_'):
            continue
        keys: list[tuple[str, str]] = []
        for inner in lines[i + 1 :]:
            if inner == "}":
                break
            m = re.match(r'^  • "([^"]+)": (.*?),?$', inner)
            if m:
                keys.append((m.group(1), m.group(2)))
        event = json.loads(dict(keys)["_event"])
        out.setdefault(event, keys)
    return out


def test_latest_fixtures_follow_the_latest_document() -> None:
    samples = latest_samples(LATEST_DOC.read_text(encoding="utf-8"))
    assert set(samples) == {*EVENTS, "SparePartConsumptionWasCanceled"}
    for event, keys in samples.items():
        body = load(f"latest/{event}.json")
        assert list(body) == [k for k, _ in keys], event
        for key, raw in keys:
            if raw not in ("{", "[", "[ ]"):
                assert body[key] == json.loads(raw), (event, key)
        old = FIXTURES / f"{event}.json"
        if old.exists():  # nested objects come from the complete older samples
            for key, value in json.loads(old.read_text(encoding="utf-8")).items():
                assert body[key] == value, (event, key)
