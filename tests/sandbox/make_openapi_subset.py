"""Regenerate tests/sandbox/toloka_openapi_subset.json from Toloka's OpenAPI description.

Why: CI has no copy of Toloka/toloka-openapi, so the schemas our sandbox must honour are vendored as plain
JSON Schema (Draft 2020-12). Run by hand with any Python that has PyYAML (the dev venv lacks it;
the system /usr/bin/python3 has it); only its output is committed:

    python tests/sandbox/make_openapi_subset.py [/work/shared/toloka-openapi]

Conversion OpenAPI 3.0 -> JSON Schema: `$ref`s (also cross-file ones into parts/api/additional.yaml) become
`#/$defs/<Name>`; annotations (`description`, `example`, `summary`, `default`, `discriminator`, `x-*`) are
dropped; OpenAPI's boolean `exclusiveMinimum: false` is dropped (it means "inclusive", the JSON Schema
default); a placeholder property name like `<n>` (PageOfBonusV1.items) becomes `additionalProperties`.
Everything else (`type`, `enum`, `format`, `minimum`, `required`, `allOf`, ...) is kept as written.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

SOURCE = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/toloka-openapi")
OUT = Path(__file__).with_name("toloka_openapi_subset.json")
ROOTS = ["UserBonusFormV1", "UserBonusViewV1", "PageOfBonusV1", "PageOfV1UserBonusViewV1", "OperationViewV1",
         "PageOfV1OperationViewV1", "OperationLog", "HasMore"]
DROP = {"description", "example", "examples", "summary", "default", "discriminator", "xml", "externalDocs"}


def load() -> dict[str, dict[str, Any]]:
    """All component schemas of both files, by name (names do not collide between the two)."""
    full = yaml.safe_load((SOURCE / "fullApi.yaml").read_text(encoding="utf-8"))
    extra = yaml.safe_load((SOURCE / "parts/api/additional.yaml").read_text(encoding="utf-8"))
    return {**extra["components"]["schemas"], **full["components"]["schemas"]}


def convert(node: Any, wanted: list[str]) -> Any:
    """One OpenAPI schema node as JSON Schema; referenced names are queued in `wanted`."""
    if isinstance(node, list):
        return [convert(n, wanted) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROP or key.startswith("x-"):
            continue
        if key == "$ref":
            name = value.rsplit("/", 1)[1]
            if name not in wanted:
                wanted.append(name)
            out["$ref"] = f"#/$defs/{name}"
        elif key == "exclusiveMinimum" and isinstance(value, bool):
            if value:  # OpenAPI 3.0 boolean form -> JSON Schema numeric form; `minimum` is then redundant
                out["exclusiveMinimum"] = node["minimum"]
        elif key == "properties":
            props = {}
            for name, sub in value.items():
                if name.startswith("<") and name.endswith(">"):
                    out["additionalProperties"] = convert(sub, wanted)
                else:
                    props[name] = convert(sub, wanted)
            if props:
                out["properties"] = props
        else:
            out[key] = convert(value, wanted)
    return out


def main() -> None:
    schemas = load()
    wanted = list(ROOTS)
    defs: dict[str, Any] = {}
    while len(defs) < len(wanted):
        name = wanted[len(defs)]
        defs[name] = convert(schemas[name], wanted)
    document = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": (
            "Subset of Toloka's OpenAPI description, converted to JSON Schema by tests/sandbox/"
            "make_openapi_subset.py. Source: https://github.com/Toloka/toloka-openapi fullApi.yaml and "
            "parts/api/additional.yaml, components.schemas " + ", ".join(defs) + ". "
            "Copyright 2022 YANDEX LLC, licensed under the Apache License, Version 2.0 "
            "(http://www.apache.org/licenses/LICENSE-2.0); modified: descriptions/examples removed, $refs "
            "rewritten to $defs. The error envelope is not a component in the source; it is transcribed from "
            "parts/api/info-description.md ('HTTP status codes': request_id, code, message, optional payload)."
        ),
        "$defs": {
            **defs,
            "UserBonusBatchCreateOperationV1": {
                "$comment": "OperationViewV1 as returned for bonuses: type USER_BONUS.BATCH_CREATE, parameters "
                            "{skip_invalid_items}, details {total_count, valid_count, not_valid_count, "
                            "success_count, failed_count} (additional.yaml ParametersObjectNode/DetailsObjectNode; "
                            "toloka-kit UserBonusCreateBatchOperation docs; responses/api/user-bonus-post.yaml)",
                "allOf": [{"$ref": "#/$defs/OperationViewV1"}],
                "required": ["id", "type", "status", "submitted", "parameters"],
                "properties": {
                    "type": {"const": "USER_BONUS.BATCH_CREATE"},
                    "parameters": {"required": ["skip_invalid_items"]},
                    "details": {"required": ["total_count", "valid_count", "not_valid_count",
                                             "success_count", "failed_count"]},
                },
            },
            "ErrorEnvelope": {
                "$comment": "parts/api/info-description.md, 'HTTP status codes'; payload is optional",
                "type": "object",
                "required": ["request_id", "code", "message"],
                "properties": {"request_id": {"type": "string"}, "code": {"type": "string"},
                               "message": {"type": "string"}, "payload": {}},
            },
        },
    }
    OUT.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(document['$defs'])} schemas)")


if __name__ == "__main__":
    main()
