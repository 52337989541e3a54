"""``ccpipe schema export`` and ``ccpipe asyncapi``: the contract as documents."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ccpipe.pipeline.app import asyncapi_document
from ccpipe.pipeline.cli.common import output_dir, print_json, say
from ccpipe.pipeline.cli.events import EventsLine
from ccpipe.schemas.cloudevents import CloudEvent
from ccpipe.schemas.config import Settings
from ccpipe.schemas.events import PAYLOAD_MODELS
from ccpipe.schemas.workload import WorkloadSpec


def exported_models() -> dict[str, type[BaseModel]]:
    """Every model with a JSON Schema file: the event (its CloudEvent wire form), a line of ``events --json``,
    each payload, the spec, the config."""
    models: dict[str, type[BaseModel]] = {"event": CloudEvent, "events-line": EventsLine,
                                          "workload-spec": WorkloadSpec, "settings": Settings}
    for etype, model in PAYLOAD_MODELS.items():
        models[f"payload.{etype.value}"] = model
    return models


def cmd_schema_export(settings: Settings, args: argparse.Namespace) -> int:
    """Write ``<name>.schema.json`` for every model into DIR."""
    out = output_dir(args.dir, "schema directory")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in exported_models().items():
        schema: dict[str, Any] = model.model_json_schema(by_alias=True)
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"ccpipe:{name}", **schema}
        path = out / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(str(path))
    if args.json:
        print_json({"written": written})
    else:
        say(f"wrote {len(written)} JSON Schema files to {out}")
    return 0


def cmd_asyncapi(settings: Settings, args: argparse.Namespace) -> int:
    """Print (or write) the AsyncAPI document."""
    doc = asyncapi_document(settings)
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
        say(f"wrote {args.out}")
    else:
        print_json(doc)
    return 0


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """The contract as documents: schema export, asyncapi."""
    sch = sub.add_parser("schema", help="JSON Schema of the contract").add_subparsers(dest="schema_cmd", required=True)
    p = add("export", cmd_schema_export, "write JSON Schema for every model into DIR", into=sch)
    p.add_argument("dir")
    p = add("asyncapi", cmd_asyncapi, "print the AsyncAPI document of every subject", json_flag=False)
    p.add_argument("--out", help="write to this file instead of stdout")
