"""Bundles the official MoySklad OpenAPI (modular OpenAPI 3.0.3, ../shared/specs/moysklad/openapi)
into one JSON file the fake checks every request against: tests/fixtures/moysklad/contract.json.

For each operation of the entity paths obmen's connector may call — its ENTITIES (read from
src/connectors/moysklad/mod.rs) plus assortment and webhookstock — the file keeps method, path
template, parameters (name, in, required, schema), the request body schema and the 200 answer's
schema; plus the webhook notification payload schemas. Every $ref is inlined once into `$defs`
(OpenAPI `nullable` becomes a null type, boolean exclusive bounds become 2020-12 numbers).

Two supplements where the spec says less than MoySklad does (both listed in the output's
`supplements`):
- `filter` and `order` on every entity list: the spec declares them on dictionaries only, but
  document lists take them too (the prose docs' entity tables have a "Фильтрация" column, and
  _general.md describes filter/order for all lists; connector reference §3.5).
- A `oneOf` of entity types (Assortment: Product | Service | Variant | Bundle | Consignment) is
  told apart by `meta.type`, as the spec's own `x-polymorphic-discriminator` mapping says; JSON
  Schema has no discriminator, and without it a product row matches several members.

Run after the spec or the connector's entity list changes (needs PyYAML):
    python3 tests/moysklad/contract.py [path/to/openapi]"""
import json, os, re, sys, yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "../.."))
ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "../shared/specs/moysklad/openapi")
ROOT = os.path.normpath(ROOT)
OUT = os.path.join(REPO, "tests/fixtures/moysklad/contract.json")

src = open(os.path.join(REPO, "src/connectors/moysklad/mod.rs"), encoding="utf-8").read()
block = re.search(r"pub const ENTITIES: &\[&str\] = &\[(.*?)\];", src, re.S).group(1)
ENTITIES = set(re.findall(r'"([a-z]+)"', block)) | {"assortment", "webhookstock"}

cache, defs = {}, {}
supplements = []
# meta.type of each polymorphic entity component (the spec's x-polymorphic-discriminator).
TYPE_OF = {}

def load(path):
    if path not in cache:
        with open(path, encoding="utf-8") as f:
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
    return re.sub(r"[^A-Za-z0-9_]", "_", key.replace(".yaml", ""))

def schema(node, base):
    """An OpenAPI schema as JSON Schema 2020-12, its $refs moved into `defs`."""
    if isinstance(node, list):
        return [schema(n, base) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target, path, key = resolve(node["$ref"], base)
        n = name_of(key)
        if n not in defs:
            defs[n] = True
            defs[n] = schema(target, path)
        return {"$ref": "#/$defs/" + n}
    out = {}
    if isinstance(node.get("oneOf"), list) and node["oneOf"] and all(
            isinstance(m, dict) and m.get("$ref", "").split("#")[-1].startswith("/components/schemas/")
            and m["$ref"].split("/")[-1] in TYPE_OF for m in node["oneOf"]):
        node = dict(node)
        node["oneOf"] = [{"allOf": [m, {"required": ["meta"], "properties": {"meta": {
            "required": ["type"], "properties": {"type": {"const": TYPE_OF[m["$ref"].split("/")[-1]]}}}}}]}
            for m in node["oneOf"]]
        note = "oneOf " + "|".join(m["allOf"][0]["$ref"].split("/")[-1] for m in node["oneOf"]) + " told apart by meta.type"
        if note not in supplements:
            supplements.append(note)
    for k, v in node.items():
        if k in ("example", "examples", "discriminator", "xml", "externalDocs", "description"):
            continue
        if k in ("properties", "patternProperties"):
            # Property names are data, not keywords: a property may be called `description`.
            out[k] = {name: schema(sub, base) for name, sub in v.items()}
        else:
            out[k] = schema(v, base) if k not in ("enum", "required", "default") else v
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

def deref(node, base):
    """A non-schema object ($ref to a parameter, path item…) and the file it lives in."""
    while isinstance(node, dict) and "$ref" in node:
        node, base, _ = resolve(node["$ref"], base)
    return node, base

def json_schema_of(content, base):
    if not content:
        return None
    media = content.get("application/json") or next(iter(content.values()))
    return schema(media["schema"], base) if "schema" in media else None

entry = os.path.join(ROOT, "openapi.yaml")
spec = load(entry)
base_schemas = load(os.path.join(ROOT, "components/schemas/common/entityBase.yaml"))
for m in base_schemas["BatchResponseEntity"]["x-polymorphic-discriminator"]["mappings"]:
    TYPE_OF[m["componentName"]] = m["type"]
params_file = os.path.join(ROOT, "components/parameters.yaml")
operations = []
for path, item in spec["paths"].items():
    segs = path.strip("/").split("/")
    if len(segs) < 2 or segs[0] != "entity" or segs[1] not in ENTITIES:
        continue
    item, ibase = deref(item, entry)
    shared = item.get("parameters", [])
    for method in ("get", "post", "put", "delete"):
        if method not in item:
            continue
        op = item[method]
        params = []
        for p in shared + op.get("parameters", []):
            p, pbase = deref(p, ibase)
            params.append({"name": p["name"], "in": p["in"], "required": bool(p.get("required")),
                           "schema": schema(p.get("schema", {}), pbase)})
        if method == "get" and len(segs) == 2:
            for name in ("filter", "order"):
                if not any(p["name"] == name and p["in"] == "query" for p in params):
                    p = load(params_file)[name]
                    params.append({"name": name, "in": "query", "required": False,
                                   "schema": schema(p["schema"], params_file)})
                    supplements.append(f"GET {path}: query parameter `{name}`")
        body = None
        if "requestBody" in op:
            rb, rbase = deref(op["requestBody"], ibase)
            body = {"required": bool(rb.get("required")), "schema": json_schema_of(rb.get("content"), rbase)}
        answer = None
        ok = op.get("responses", {}).get("200")
        if ok:
            ok, obase = deref(ok, ibase)
            answer = json_schema_of(ok.get("content"), obase)
        operations.append({"method": method.upper(), "path": path, "id": op.get("operationId"),
                           "parameters": params, "body": body, "answer": answer})

payloads = {n: schema({"$ref": "#/components/schemas/" + n}, entry)
            for n in ("WebhookNotificationPayload", "WebhookStockNotificationPayload")}
out = {
    "source": "moysklad/api-remap-1.2-openapi-specification @ 6d9289bd42d42cb60e5a762156c4bf3fdb97d990 (src/, Apache 2.0), bundled by tests/moysklad/contract.py",
    "entities": sorted(ENTITIES),
    "supplements": supplements,
    "operations": operations,
    "payloads": payloads,
    "$defs": defs,
}
with open(OUT, "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=False, separators=(",", ":"), sort_keys=False)
print(f"{len(operations)} operations, {len(defs)} definitions -> {OUT} ({os.path.getsize(OUT)} bytes)")
