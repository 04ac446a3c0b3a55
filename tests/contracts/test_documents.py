"""The published contracts read by tools nobody here wrote (issue 15): the AsyncAPI document by the
AsyncAPI project's own parser (npm @asyncapi/parser, installed by deploy/setup/tools.d/asyncapi.sh
when missing: a missing parser fails, never skips), every service's OpenAPI document by
openapi-spec-validator, and every example in them against its JSON Schema (jsonschema) and its model.
That the committed documents match the models is tests/unit/test_contracts.py (`export.drift()`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from contracts import examples, export, http, topics
from contracts.events import EVENT_TYPES
from tests.support.infra import ROOT

ASYNCAPI_SH = ROOT / "deploy" / "setup" / "tools.d" / "asyncapi.sh"
PARSE_JS = Path(__file__).parent / "asyncapi_parse.mjs"
ERROR, WARNING = 0, 1  # the parser's diagnostic severities (2: information, 3: hint)


@pytest.fixture(scope="session")
def asyncapi_parser() -> str:
    """The node_modules folder that holds the pinned @asyncapi/parser (installed when missing)."""
    r = subprocess.run(["bash", str(ASYNCAPI_SH)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or not r.stdout.strip():
        pytest.fail(f"{ASYNCAPI_SH} could not install @asyncapi/parser:\n{r.stderr[-3000:]}", pytrace=False)
    return r.stdout.strip().splitlines()[-1]


def openapi_documents() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(export.OPENAPI.glob("*.json"))}


def test_the_asyncapi_parser_reads_the_document_without_error(asyncapi_parser: str) -> None:
    r = subprocess.run(["node", str(PARSE_JS), str(export.ASYNCAPI)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "ASYNCAPI_NODE_MODULES": asyncapi_parser})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    bad = [d for d in out["diagnostics"] if d["severity"] in (ERROR, WARNING)]
    assert out["parsed"] and bad == [], json.dumps(bad, indent=2)
    assert sorted(out["channels"]) == sorted(topics.ALL)
    assert sorted(out["messages"]) == sorted(EVENT_TYPES)
    assert out["examples"] == sum(len(v) for v in examples.EVENTS.values()) > 0


def test_the_parser_reports_a_broken_document(asyncapi_parser: str, tmp_path: Path) -> None:
    """The parser is not a rubber stamp: a dangling reference is an error."""
    doc = yaml.safe_load(export.ASYNCAPI.read_text())
    first = next(iter(doc["components"]["messages"].values()))
    first["payload"] = {"$ref": "#/components/schemas/Missing"}
    broken = tmp_path / "asyncapi.yaml"
    broken.write_text(yaml.safe_dump(doc))
    r = subprocess.run(["node", str(PARSE_JS), str(broken)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "ASYNCAPI_NODE_MODULES": asyncapi_parser})
    out = json.loads(r.stdout)
    assert any(d["severity"] == ERROR for d in out["diagnostics"]), out["diagnostics"]


@pytest.mark.parametrize("service", export.HTTP_SERVICES)
def test_every_openapi_document_is_valid(service: str) -> None:
    doc = openapi_documents()[service]
    validate_openapi(doc)  # raises with the validator's own report
    assert doc["openapi"].startswith("3.") and doc["paths"]


def test_the_validator_rejects_a_broken_openapi_document() -> None:
    doc = openapi_documents()["order"]
    doc["paths"]["/v1/orders"]["post"]["responses"] = {"200": {"content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Missing"}}}}}
    with pytest.raises(Exception, match="Missing"):
        validate_openapi(doc)


def _schema_examples(node: Any, pointer: str = "") -> list[tuple[str, Any]]:
    """(JSON pointer of the schema, example) for every `examples`/`example` of a schema in a document."""
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        if "properties" in node or "type" in node or "$ref" in node:
            found += [(pointer, ex) for ex in node.get("examples", []) if isinstance(node.get("examples"), list)]
            if "example" in node:
                found.append((pointer, node["example"]))
        for k, v in node.items():
            found += _schema_examples(v, f"{pointer}/{str(k).replace('~', '~0').replace('/', '~1')}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _schema_examples(v, f"{pointer}/{i}")
    return found


def _validator(root: dict[str, Any], uri: str, pointer: str) -> Draft202012Validator:
    """Validates against the schema at `pointer` in `root`, its `#/components/...` references resolved in root."""
    registry: Registry[Any] = Registry().with_resource(uri, DRAFT202012.create_resource(root))
    return Draft202012Validator({"$ref": f"{uri}#{pointer}"}, registry=registry)


@pytest.mark.parametrize("service", export.HTTP_SERVICES)
def test_every_openapi_example_matches_its_schema_and_model(service: str) -> None:
    doc = openapi_documents()[service]
    found = _schema_examples(doc)
    assert found, f"the {service} document has no example"
    uri = f"urn:aimis:openapi:{service}"
    for where, example in found:
        errors = sorted(_validator(doc, uri, where).iter_errors(example), key=str)
        assert errors == [], f"{service}{where}: {[e.message for e in errors]}"
        model = getattr(http, where.rsplit("/", 1)[-1], None)
        if model is not None:
            model.model_validate(example)


def test_every_asyncapi_example_matches_its_payload_schema_and_model() -> None:
    doc = yaml.safe_load(export.ASYNCAPI.read_text())
    checked = 0
    for key, message in doc["components"]["messages"].items():
        schema_file = export.HERE / message["payload"]["$ref"]
        schema = json.loads(schema_file.read_text())
        for ex in message.get("examples", []):
            errors = sorted(Draft202012Validator(schema).iter_errors(ex["payload"]), key=str)
            assert errors == [], f"{key} {ex['name']}: {[e.message for e in errors]}"
            export.event_model(message["name"]).model_validate(ex["payload"])
            checked += 1
    assert checked == sum(len(v) for v in examples.EVENTS.values()) > 0


def test_a_wrong_example_is_caught() -> None:
    """The example check is not vacuous: a wrong type and a missing field are both reported."""
    doc = openapi_documents()["order"]
    v = _validator(doc, "urn:aimis:openapi:order", "/components/schemas/PlaceOrderRequest")
    assert list(v.iter_errors({"org_id": "hosp-1", "lines": [{"sku": 7}]}))
    assert list(v.iter_errors({"lines": [{"sku": "AI-QTY"}]}))


def test_asyncapi_script_does_nothing_when_the_pinned_parser_is_there(asyncapi_parser: str) -> None:
    r = subprocess.run(["bash", str(ASYNCAPI_SH)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == asyncapi_parser and "installing" not in r.stderr
    pinned = re.search(r"AIMIS_ASYNCAPI_PARSER_VERSION:-([0-9.]+)", ASYNCAPI_SH.read_text())
    installed = json.loads((Path(asyncapi_parser) / "@asyncapi" / "parser" / "package.json").read_text())
    assert pinned and installed["version"] == pinned.group(1)


def test_asyncapi_script_without_node_fails_naming_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()  # a PATH with neither node nor npm
    env = {"PATH": str(tmp_path / "bin"), "HOME": str(tmp_path), "AIMIS_CACHE": str(tmp_path / "cache")}
    r = subprocess.run(["/bin/bash", str(ASYNCAPI_SH)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1 and "is needed to install @asyncapi/parser" in r.stderr
    assert not (tmp_path / "cache" / "node" / "node_modules").exists()
