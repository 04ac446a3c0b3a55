"""Export JSON Schema for every message and the AsyncAPI document of every topic.

    python -m contracts.export          write contracts/schemas/*.json, contracts/asyncapi.yaml and
                                        contracts/openapi/<service>.json (each service's HTTP API)
    python -m contracts.export --check  exit 1 when the committed files differ from the models
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, create_model

from contracts import examples, http, topics
from contracts.events import EVENT_TYPES, CloudEvent

HERE = Path(__file__).parent
SCHEMAS = HERE / "schemas"
ASYNCAPI = HERE / "asyncapi.yaml"
OPENAPI = HERE / "openapi"
HTTP_SERVICES = ("order", "entitlement", "metering", "expiry")

TOPIC_DOCS = {
    topics.USAGE: "Usage reported by the imaging platform and by metering's HTTP ingestion.",
    topics.USAGE_REJECTED: "Usage that metering rejected, with the reason and the original.",
    topics.ORDERS: "Agreements and the order lifecycle, from the order service.",
    topics.DEDUCTIONS: "Accepted, de-duplicated usage for the entitlement service to deduct.",
    topics.LEDGER: "Every balance change, from the entitlement service (analytics feed).",
    topics.EXPIRY_COMMANDS: "Deadlines fallen due, from the expiry service to entitlement.",
    topics.NOTIFICATIONS: "Reminders ahead of deadlines.",
    topics.ORDER_DLQ: "What the order service could not process, with the reason.",
    topics.METERING_DLQ: "What metering could not process from topics other than usage, with the reason.",
    topics.ENTITLEMENT_DLQ: "What the entitlement service could not process, with the reason.",
    topics.EXPIRY_DLQ: "What the expiry service could not process, with the reason.",
}


def event_model(event_type: str) -> type[BaseModel]:
    data_model = EVENT_TYPES[event_type][1]
    name = "".join(p.capitalize() for p in event_type.replace(".", "_").split("_")) + "Event"
    model: type[BaseModel] = create_model(
        name,
        __base__=CloudEvent[data_model],  # type: ignore[valid-type]
        type=(Literal[event_type], ...),  # type: ignore[arg-type]
    )
    return model


def http_models() -> list[type[BaseModel]]:
    return [
        v for v in vars(http).values()
        if isinstance(v, type) and issubclass(v, BaseModel) and v is not BaseModel and v.__module__ == http.__name__
        and not v.__pydantic_generic_metadata__["origin"]  # `LineFields[Id128]`: a base, not a body
    ]


def rendered() -> dict[str, str]:
    """Every generated file: relative path -> text."""
    out: dict[str, str] = {}
    for t in sorted(EVENT_TYPES):
        schema = event_model(t).model_json_schema(mode="serialization")
        schema["$id"] = f"urn:aimis:event:{t}"
        out[f"schemas/events/{t}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    for m in sorted(http_models(), key=lambda m: m.__name__):
        schema = m.model_json_schema(mode="serialization")
        out[f"schemas/http/{m.__name__}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    out["asyncapi.yaml"] = asyncapi()
    for service, doc in openapi_documents().items():
        out[f"openapi/{service}.json"] = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    return out


def openapi_documents() -> dict[str, dict[str, Any]]:
    """The OpenAPI document each service serves at /openapi.json (built, never started)."""
    import importlib

    from shared.config import Settings

    settings = Settings(auth_secret="export")  # the documents depend on no setting
    docs = {}
    for service in HTTP_SERVICES:
        app = importlib.import_module(f"services.{service}.app").create_app(settings)
        docs[service] = app.openapi()
    return docs


def asyncapi() -> str:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for topic in topics.ALL:
        types = sorted(t for t, (tp, _) in EVENT_TYPES.items() if tp == topic)
        refs = {}
        for t in types:
            key = t.replace(".", "_")
            messages[key] = {
                "name": t,
                "contentType": "application/cloudevents+json",
                "payload": {"$ref": f"./schemas/events/{t}.json"},
                "bindings": {"kafka": {"key": {"type": "string", "description": "org_id"}}},
            }
            if t in examples.EVENTS:
                messages[key]["examples"] = [
                    {"name": f"{t}-{i}", "payload": ex} for i, ex in enumerate(examples.EVENTS[t], 1)
                ]
            refs[key] = {"$ref": f"#/components/messages/{key}"}
        ch = topic.replace(".", "_")
        channels[ch] = {"address": topic, "description": TOPIC_DOCS[topic], "messages": refs}
        operations[f"publish_{ch}"] = {"action": "send", "channel": {"$ref": f"#/channels/{ch}"}}
    doc = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "AIMIS Billing",
            "version": "1",
            "description": "Every topic is keyed by org_id; every message is a CloudEvents 1.0 JSON document.",
        },
        "defaultContentType": "application/cloudevents+json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }
    return str(yaml.safe_dump(doc, sort_keys=False))


def drift() -> list[str]:
    want = rendered()
    problems = []
    for rel, text in want.items():
        p = HERE / rel
        if not p.exists() or p.read_text() != text:
            problems.append(rel)
    present = {str(p.relative_to(HERE)) for d in (SCHEMAS, OPENAPI) for p in d.rglob("*.json")}
    problems += sorted(present - set(want))
    return problems


def write() -> None:
    for d in (SCHEMAS, OPENAPI):
        for p in d.rglob("*.json"):
            p.unlink()
    for rel, text in rendered().items():
        p = HERE / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


if __name__ == "__main__":
    if "--check" in sys.argv:
        d = drift()
        if d:
            print("out of date (run `python -m contracts.export`):", *d, sep="\n  ")
            sys.exit(1)
        print("contracts in sync")
    else:
        write()
        print(f"wrote {len(rendered())} files under {HERE}")
