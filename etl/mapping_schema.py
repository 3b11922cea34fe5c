"""The JSON schema of a hospital mapping file, and the small validator the ETL checks it with.

The schema is JSON Schema (draft 2020-12) written as a Python dict, so it ships with the node
install and needs no ``jsonschema`` package: the ETL validates with ``validate`` below, which
implements the keywords the schema uses (type, properties, additionalProperties, required,
enum, items, minItems, minLength, oneOf). ``python -m etl.mapping_schema`` prints the schema as
JSON for editors (YAML language server, VS Code) and other validators.

Errors come back as ``(path, message)`` with the path a list of keys; ``line_of`` turns a path
into the line of the YAML file it points at.
"""
from __future__ import annotations

import json
import sys

import yaml

_SCALAR = {"type": ["string", "number", "integer", "boolean", "null"]}
_COLUMN = {"type": "string", "minLength": 1, "description": "a source column header, exactly as in the file"}
_COLUMNS = {"type": "array", "items": _COLUMN, "minItems": 1}
_CODES = {
    "type": "object",
    "description": "source value -> schema value (category, 0/1, or null for missing); a closed "
                   "list: a value not listed stops the ETL naming the value and its count",
    "additionalProperties": _SCALAR,
}
_UNIT = {
    "oneOf": [
        {"type": "string", "minLength": 1,
         "description": "the unit of the whole column (g/L, mmol/L, d ...), or 'detect' for per-row "
                        "detection among the field's detectable units"},
        {"type": "object", "required": ["detect"], "additionalProperties": False,
         "properties": {"detect": {"type": "array", "items": {"type": "string", "minLength": 1},
                                   "minItems": 2,
                                   "description": "candidate units, chosen per row by the value"}}},
    ],
}
RULE_KINDS = ("column", "any_of", "all_of", "constant", "compute")
_RULE = {
    "oneOf": [
        {"type": "string", "minLength": 1, "description": "shorthand for {column: ...}"},
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "column": _COLUMN,
                "any_of": {**_COLUMNS, "description": "1 when any column reads 1, 0 when all read 0, "
                                                      "else missing"},
                "all_of": {**_COLUMNS, "description": "1 when every column reads 1, 0 when any reads "
                                                      "0, else missing"},
                "constant": {**_SCALAR, "description": "not_tested (missing, declared) or a fixed value "
                                                       "for every patient"},
                "compute": {"type": "string", "minLength": 1,
                            "description": "arithmetic over source columns: col(\"WBC\") * "
                                           "col(\"Neutro %\") / 100"},
                "codes": _CODES,
                "unit": _UNIT,
                "note": {"type": "string"},
            },
            "oneOf": [{"required": [k]} for k in RULE_KINDS],
        },
    ],
}
_EXTRA = {
    "oneOf": [
        {"type": "string", "minLength": 1},
        {"type": "object", "required": ["column"], "additionalProperties": False,
         "properties": {"column": _COLUMN, "unit": {"type": "string"}, "note": {"type": "string"}}},
    ],
}

MAPPING_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:fedhaem:etl-mapping",
    "title": "FedHaem hospital mapping file",
    "description": "How one hospital export maps onto a use case's schema (docs/etl-mapping.md).",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "version": {"type": ["string", "integer"], "enum": ["1", "2", 1, 2]},
        "use_case": {"type": "string", "enum": ["MDS", "AML", "CMML", "MM", "SCD", "mds", "aml", "cmml", "mm", "scd"]},
        "delimiter": {"type": "string", "minLength": 1},
        "encoding": {"type": "string", "minLength": 1},
        "date_format": {"type": "string", "minLength": 1},
        "missing_values": {"type": "array", "items": {"type": "string"}},
        "fields": {"type": "object", "additionalProperties": _RULE,
                   "description": "schema field -> how it is read"},
        "ignore": {"type": "array", "items": _COLUMN,
                   "description": "source columns read as nothing (not genes, not unknown)"},
        "extra": {"type": "object", "additionalProperties": _EXTRA,
                  "description": "fields outside the schema, carried in FHIR and extra.csv"},
        # The first mapping format, still read: field -> column, field -> unit,
        # field -> {canonical: [tokens]} added to the built-in codes, field -> [synonyms].
        "columns": {"type": "object", "additionalProperties": _COLUMN},
        "units": {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}},
        "codes": {"type": "object", "additionalProperties": {
            "type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}},
        "synonyms": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        "gene_panel": {"type": "array", "items": {"type": "string", "minLength": 1}},
    },
}

_TYPES = {"string": str, "array": list, "object": dict, "boolean": bool, "null": type(None)}


def _is_type(value, t: str) -> bool:
    if t in ("number", "integer"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return t == "number" or float(value).is_integer()
    return isinstance(value, _TYPES[t])


def _name(t) -> str:
    return " or ".join(t) if isinstance(t, list) else t


def validate(value, schema: dict = MAPPING_SCHEMA, path: tuple = ()) -> list[tuple[list, str]]:
    """Errors of `value` against `schema` as (path, message); [] when valid."""
    errors: list[tuple[list, str]] = []
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        if not any(_is_type(value, x) for x in types):
            return [(list(path), f"expected {_name(t)}, got {type(value).__name__} {value!r:.60}")]
    if "enum" in schema and value not in schema["enum"]:
        shown = ", ".join(dict.fromkeys(str(v) for v in schema["enum"]))
        errors.append((list(path), f"{value!r} is not one of {shown}"))
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        errors.append((list(path), "must not be empty"))
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append((list(path), f"needs at least {schema['minItems']} item(s)"))
        if "items" in schema:
            for i, item in enumerate(value):
                errors += validate(item, schema["items"], path + (i,))
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in value:
                errors.append((list(path), f"missing key {k!r}"))
        for k, v in value.items():
            if k in props:
                errors += validate(v, props[k], path + (k,))
            elif schema.get("additionalProperties") is False:
                if props:
                    errors.append((list(path) + [k], f"unknown key {k!r}; allowed here: {', '.join(props)}"))
                else:
                    errors.append((list(path) + [k], f"unknown key {k!r}"))
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += validate(v, schema["additionalProperties"], path + (k,))
    if "oneOf" in schema:
        branches = schema["oneOf"]
        results = [validate(value, b, path) for b in branches]
        ok = [i for i, r in enumerate(results) if not r]
        if len(ok) != 1:
            keyed = [b["required"][0] for b in branches if list(b) == ["required"]]
            if len(keyed) == len(branches) and isinstance(value, dict):
                found = [k for k in keyed if k in value]
                errors.append((list(path), f"needs exactly one of {', '.join(keyed)}"
                               + (f" (found {', '.join(found)})" if found else "")))
            elif not ok:
                # report the branch of the same JSON type that came closest
                same = [r for b, r in zip(branches, results)
                        if b.get("type") is None or any(_is_type(value, x) for x in
                                                        (b["type"] if isinstance(b["type"], list) else [b["type"]]))]
                errors += min(same or results, key=len)
    return errors


def line_map(text: str) -> dict[tuple, int]:
    """Path of every key and item of a YAML (or JSON) text -> its 1-based line; {} if unreadable."""
    try:
        root = yaml.compose(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[tuple, int] = {}

    def walk(node, path):
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                p = path + (k.value,)
                lines[p] = k.start_mark.line + 1
                walk(v, p)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


def line_of(lines: dict[tuple, int], path) -> int | None:
    """The line of the deepest part of `path` found in `lines`."""
    p = tuple(path)
    while p:
        if p in lines:
            return lines[p]
        p = p[:-1]
    return None


def format_path(path) -> str:
    """['fields', 'sex', 'codes'] -> 'fields.sex.codes'; list items as [i]."""
    out = ""
    for k in path:
        out += f"[{k}]" if isinstance(k, int) else (("." if out else "") + str(k))
    return out or "(top level)"


if __name__ == "__main__":
    json.dump(MAPPING_SCHEMA, sys.stdout, indent=2)
    sys.stdout.write("\n")
