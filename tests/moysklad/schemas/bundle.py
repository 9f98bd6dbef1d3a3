"""Bundles one entity schema (OpenAPI 3.0 → JSON Schema 2020-12) of the official MoySklad OpenAPI (../shared/specs/moysklad/openapi)
into a self-contained JSON Schema for the fake's contract checks: every $ref inlined into
$defs, OpenAPI's `nullable` turned into a null type. Run: python3 bundle.py <Schema> <out.json>."""
import json, os, sys, yaml

ROOT = os.path.join(os.path.dirname(__file__), "../../../../shared/specs/moysklad/openapi")
ROOT = os.environ.get("MS_OPENAPI", os.path.normpath(ROOT))
cache, defs = {}, {}

def load(path):
    if path not in cache:
        with open(path) as f:
            cache[path] = yaml.safe_load(f)
    return cache[path]

def resolve(ref, base):
    file, _, ptr = ref.partition("#")
    path = os.path.normpath(os.path.join(os.path.dirname(base), file)) if file else base
    node = load(path)
    for part in [p for p in ptr.split("/") if p]:
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node, path, (os.path.relpath(path, ROOT) + "#" + ptr)

def name_of(key):
    return key.replace("/", "_").replace("#", "_").replace(".yaml", "").replace(".", "_")

def walk(node, base):
    if isinstance(node, list):
        return [walk(n, base) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target, path, key = resolve(node["$ref"], base)
        n = name_of(key)
        if n not in defs:
            defs[n] = True
            defs[n] = walk(target, path)
        return {"$ref": "#/$defs/" + n}
    out = {}
    for k, v in node.items():
        if k in ("example", "examples", "discriminator", "xml", "externalDocs"):
            continue
        out[k] = walk(v, base) if k not in ("enum", "required") else v
    for ex, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(ex), bool):
            if out.pop(ex) and bound in out:
                out[ex] = out.pop(bound)
    if out.pop("nullable", False):
        t = out.get("type")
        if isinstance(t, str):
            out["type"] = [t, "null"]
        elif "enum" in out:
            out["enum"] = out["enum"] + [None]
    return out

root = os.path.join(ROOT, "openapi.yaml")
schema = walk({"$ref": "#/components/schemas/" + sys.argv[1]}, root)
out = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$defs": defs}
out.update(schema)
with open(sys.argv[2], "w") as f:
    json.dump(out, f, ensure_ascii=False, indent=1)
