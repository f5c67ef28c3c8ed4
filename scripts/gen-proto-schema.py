#!/usr/bin/env python3
"""Generate the protobuf schema that kube-sandbox uses to decode Kubernetes protobuf request bodies.

Reads two crates from the local cargo registry (run `cargo fetch` first):
  - k8s-pb 0.9.0: prost-generated message structs; gives every message's field tags, wire
    types, nested message types and repeated/map shapes.
  - k8s-openapi 0.29: gives the exact JSON field names (prost snake_cases the proto names and
    loses acronyms: `volume_id` <- `volumeID`), which fields are required, and the
    apiVersion/kind of every top-level object.

Writes crates/kube-sandbox/src/protobuf/schema.json holding only the messages reachable from the
kinds of the API groups the sandbox serves (see GROUPS).

Usage: python3 scripts/gen-proto-schema.py [--registry DIR] [--out FILE]
"""

import argparse
import glob
import json
import os
import re
import sys

K8S_PB = "k8s-pb-0.9.0"
K8S_OPENAPI_GLOB = "k8s-openapi-0.29.*"
# k8s-openapi's module for the Kubernetes release k8s-pb 0.9.0 was generated from (1.35); its
# structs decide JSON names and required fields, the other releases only fill gaps.
K8S_OPENAPI_RELEASE = "v1_35"

# k8s-pb module paths (under src/) of the API groups the sandbox serves, with their apiVersion.
GROUPS = {
    ("api", "core", "v1"): "v1",
    ("api", "apps", "v1"): "apps/v1",
    ("api", "batch", "v1"): "batch/v1",
    ("api", "storage", "v1"): "storage.k8s.io/v1",
    ("api", "rbac", "v1"): "rbac.authorization.k8s.io/v1",
    ("api", "authentication", "v1"): "authentication.k8s.io/v1",
    ("api", "authorization", "v1"): "authorization.k8s.io/v1",
    ("api", "autoscaling", "v1"): "autoscaling/v1",
    ("api", "policy", "v1"): "policy/v1",
}

# Kinds accepted under any apiVersion: client-go sends DeleteOptions with the resource's group.
ANY_VERSION_KINDS = {"DeleteOptions": ("apimachinery", "pkg", "apis", "meta", "v1", "DeleteOptions")}

# Messages whose JSON form is not an object; the decoder implements each by name, so they
# are left out of the table (src/protobuf/well_known.rs must handle exactly these).
WELL_KNOWN = {
    "meta.v1.Time",
    "meta.v1.MicroTime",
    "meta.v1.Duration",
    "meta.v1.FieldsV1",
    "resource.Quantity",
    "resource.QuantityValue",
    "intstr.IntOrString",
    "runtime.RawExtension",
}

SCALARS = {"string", "bytes", "bool", "int32", "int64", "double"}

# Module path prefixes dropped from schema names: core.v1.Pod, meta.v1.Time, intstr.IntOrString.
NAME_PREFIXES = [
    ("api",),
    ("apimachinery", "pkg", "apis"),
    ("apimachinery", "pkg", "api"),
    ("apimachinery", "pkg", "util"),
    ("apimachinery", "pkg"),
]


def fail(msg):
    sys.exit(f"gen-proto-schema: {msg}")


def find_crate(registry, pattern):
    hits = sorted(glob.glob(os.path.join(registry, "*", pattern)))
    if not hits:
        fail(f"{pattern} not found under {registry}/*; run `cargo fetch` first")
    return hits[-1]


def schema_name(module, struct):
    for prefix in NAME_PREFIXES:
        if module[: len(prefix)] == prefix:
            return ".".join(module[len(prefix) :] + (struct,))
    return ".".join(module + (struct,))


def normalize(name):
    return name.replace("r#", "").replace("_", "").lower()


def lower_camel(snake):
    parts = snake.replace("r#", "").split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


# ---------------------------------------------------------------- k8s-pb (prost sources)

PROST_ATTR = re.compile(r"#\[prost\((.*)\)\]$")
FIELD_DECL = re.compile(r"pub (r#)?(\w+):(.*),$", re.S)
WRAPPERS = ("::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<")


def parse_prost_attr(attr):
    """`string, optional, tag = "1"` -> ("string", "optional", 1); maps -> ("string", "map", tag)."""
    tag = re.search(r'tag\s*=\s*"(\d+)"', attr)
    if not tag:
        fail(f"no tag in #[prost({attr})]")
    tag = int(tag.group(1))
    m = re.match(r'(btree_map|map|hash_map)\s*=\s*"string,\s*(\w+)"', attr)
    if m:
        return m.group(2), "map", tag
    kind = attr.split(",")[0].split("=")[0].strip()
    label = "repeated" if re.search(r"\brepeated\b", attr) else "optional"
    return kind, label, tag


def message_type_path(rust_type):
    """Strips Option/Vec/Box and map wrappers from a field's Rust type, leaving the message path."""
    # rustfmt leaves a trailing comma inside wrapped generics: `Option<\n T,\n>`.
    t = re.sub(r"\s+", "", rust_type).replace(",>", ">")
    if "BTreeMap<" in t or "HashMap<" in t:
        t = t[t.rindex(",") + 1 : -1]
    changed = True
    while changed:
        changed = False
        for w in WRAPPERS:
            if t.startswith(w) and t.endswith(">"):
                t, changed = t[len(w) : -1], True
    return t


def resolve(module, path):
    parts = path.split("::")
    mod = list(module)
    while parts and parts[0] == "super":
        parts.pop(0)
        mod.pop()
    return tuple(mod + parts[:-1]), parts[-1]


def parse_prost_module(path, module, messages):
    with open(path) as f:
        lines = [line.strip() for line in f]
    docs, i = [], 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("///"):
            docs.append(line)
        m = re.match(r"pub struct (\w+) \{$", line)
        if m:
            fields, i = parse_prost_struct(lines, i + 1, module)
            messages[(module, m.group(1))] = {
                "fields": fields,
                "nullable": any("+protobuf.nullable=true" in d for d in docs),
            }
        if not line.startswith("///") and not line.startswith("#[derive"):
            docs = []
        i += 1


def parse_prost_struct(lines, i, module):
    fields = []
    while lines[i] != "}":
        m = PROST_ATTR.match(lines[i])
        if not m:
            i += 1
            continue
        kind, label, tag = parse_prost_attr(m.group(1))
        decl = lines[i + 1]
        i += 2
        while not (decl.endswith(",") and decl.count("<") == decl.count(">")):
            decl += lines[i]
            i += 1
        d = FIELD_DECL.match(decl)
        if not d:
            fail(f"cannot parse field declaration `{decl}` in {'/'.join(module)}")
        target = None
        if kind == "message":
            target = resolve(module, message_type_path(d.group(3)))
        elif kind not in SCALARS:
            fail(f"unsupported prost type {kind} in {'/'.join(module)}")
        fields.append({"tag": tag, "rust": d.group(2), "kind": kind, "label": label, "target": target})
    return fields, i


def load_prost(root):
    messages = {}
    for path in glob.glob(os.path.join(root, "src", "**", "mod.rs"), recursive=True):
        module = tuple(os.path.relpath(os.path.dirname(path), os.path.join(root, "src")).split(os.sep))
        parse_prost_module(path, module, messages)
    return messages


# ---------------------------------------------------------------- k8s-openapi (JSON names, kinds)

JSON_KEY = re.compile(r'"([^"]+)" => Field::Key_(\w+),')
STRUCT_FIELD = re.compile(r"pub (?:r#)?(\w+): (.+),$")
RESOURCE = re.compile(
    r'const API_VERSION: &\'static str = "([^"]+)";.*?const KIND: &\'static str = "([^"]+)";', re.S
)


def load_openapi(root):
    """Returns ({(module, lowercase struct): {json name: required}},
    {normalized name: {json names}}, {(module, lowercase struct): (apiVersion, kind)})."""
    structs, by_norm, kinds = {}, {}, {}
    preferred = os.path.join(root, "src", K8S_OPENAPI_RELEASE)
    if not os.path.isdir(preferred):
        fail(f"no src/{K8S_OPENAPI_RELEASE} in {root}")
    others = sorted(glob.glob(os.path.join(root, "src", "v1_*")), reverse=True)
    versions = [preferred] + [v for v in others if v != preferred]
    for vdir in versions:
        for path in glob.glob(os.path.join(vdir, "**", "*.rs"), recursive=True):
            module = tuple(os.path.relpath(os.path.dirname(path), vdir).split(os.sep))
            with open(path) as f:
                text = f.read()
            s = re.search(r"^pub struct (\w+) \{$(.*?)^\}$", text, re.S | re.M)
            if not s:
                continue
            # k8s-pb spells some acronyms differently (AwsElasticBlockStore...): match caselessly.
            key = (module, s.group(1).lower())
            optional = {}
            for line in s.group(2).splitlines():
                fm = STRUCT_FIELD.match(line.strip())
                if fm:
                    optional[fm.group(1)] = fm.group(2).startswith("Option<")
            names = {}
            for json_name, rust in JSON_KEY.findall(text):
                if rust in optional:
                    names[json_name] = not optional[rust]
                by_norm.setdefault(normalize(json_name), set()).add(json_name)
            structs.setdefault(key, names)
            r = RESOURCE.search(text)
            if r:
                kinds.setdefault(key, (r.group(1), r.group(2)))
    return structs, by_norm, kinds


# ---------------------------------------------------------------- schema

def openapi_struct(structs, key):
    return structs.get((key[0], key[1].lower()))


def is_inline(field, own, prost):
    """Go embeds some structs (`VolumeSource` in `Volume`, `ProbeHandler` in `Probe`) with
    `json:",inline"`: proto nests them under a field of their own, JSON flattens their fields
    into the parent, so the parent's JSON names hold every field of the embedded message."""
    if own is None or field["target"] is None or field["label"] != "optional":
        return False
    names = {normalize(name) for name in own}
    inner = [normalize(f["rust"]) for f in prost[field["target"]]["fields"]]
    return normalize(field["rust"]) not in names and bool(inner) and set(inner) <= names


def json_name(field, own, by_norm, stats):
    own = own or {}
    norm = normalize(field["rust"])
    for name in own:
        if normalize(name) == norm:
            stats["struct"] += 1
            return name, own[name]
    hits = by_norm.get(norm, set())
    if len(hits) == 1:
        stats["global"] += 1
        return next(iter(hits)), False
    stats["camel"] += 1
    return lower_camel(field["rust"]), False


def field_entry(field, own, by_norm, stats, inline):
    name, required = ("", False) if inline else json_name(field, own, by_norm, stats)
    ty = schema_name(*field["target"]) if field["target"] else field["kind"]
    if field["label"] == "repeated":
        ty = "[]" + ty
    elif field["label"] == "map":
        ty = "{}" + ty
    elif required and field["kind"] in ("string", "bytes"):
        # Required strings keep "" in JSON; optional empty ones are dropped (Go's omitempty).
        ty = "!" + ty
    return [field["tag"], name, ty]


def build(prost, openapi):
    structs, by_norm, openapi_kinds = openapi
    caseless = {(m, s.lower()): (m, s) for m, s in prost}
    kinds = {}
    for key, (api_version, kind) in openapi_kinds.items():
        if key[0] in GROUPS and GROUPS[key[0]] == api_version:
            if key not in caseless:
                # A kind of another Kubernetes release than k8s-pb's: nothing to decode it with.
                print(f"note: {api_version} {kind} has no k8s-pb message; left out", file=sys.stderr)
                continue
            kinds[f"{api_version} {kind}"] = caseless[key]
    for kind, key in ANY_VERSION_KINDS.items():
        kinds[f"* {kind}"] = (key[:-1], key[-1])

    wanted, todo = set(), list(kinds.values())
    while todo:
        key = todo.pop()
        if key in wanted:
            continue
        if key not in prost:
            fail(f"message {'/'.join(key[0])}.{key[1]} is referenced but not defined")
        wanted.add(key)
        if schema_name(*key) not in WELL_KNOWN:
            todo.extend(f["target"] for f in prost[key]["fields"] if f["target"])

    stats = {"struct": 0, "global": 0, "camel": 0, "inline": 0}
    # k8s-openapi has no struct for an embedded message (VolumeSource): its fields are the parent's.
    embedded = {}
    for key in wanted:
        own = openapi_struct(structs, key)
        for f in prost[key]["fields"]:
            if is_inline(f, own, prost) and openapi_struct(structs, f["target"]) is None:
                embedded[f["target"]] = own
    messages = {}
    for key in sorted(wanted, key=lambda k: schema_name(*k)):
        name = schema_name(*key)
        if name in WELL_KNOWN:
            continue
        own = openapi_struct(structs, key) or embedded.get(key)
        fields = sorted(prost[key]["fields"], key=lambda f: f["tag"])
        entries = []
        for f in fields:
            inline = is_inline(f, own, prost)
            stats["inline"] += inline
            entries.append(field_entry(f, own, by_norm, stats, inline))
        messages[name] = entries
    arrays = sorted(
        schema_name(*k)
        for k in wanted
        if prost[k]["nullable"] and [f["rust"] for f in prost[k]["fields"]] == ["items"]
    )
    missing = sorted(WELL_KNOWN - {schema_name(*k) for k in wanted} - {"resource.QuantityValue"})
    if missing:
        print(f"note: well-known types not referenced: {missing}", file=sys.stderr)
    print(
        f"{len(kinds)} kinds, {len(messages)} messages; JSON names from the k8s-openapi struct: "
        f"{stats['struct']}, from another struct: {stats['global']}, lowerCamelCase: {stats['camel']}; "
        f"inlined embedded structs: {stats['inline']}",
        file=sys.stderr,
    )
    return {k: schema_name(*v) for k, v in sorted(kinds.items())}, arrays, messages


def render(kinds, arrays, messages, openapi_dir):
    about = (
        f"@generated by scripts/gen-proto-schema.py from {K8S_PB} (field tags and types) and "
        f"{os.path.basename(openapi_dir)} {K8S_OPENAPI_RELEASE} (JSON names, required fields, "
        "kinds); do not edit. "
        "Regenerate: cargo fetch && python3 scripts/gen-proto-schema.py. "
        "Field: [tag, jsonName, type]; type is a scalar or message name, "
        "prefixed [] for repeated, {} for map<string, _>, ! for a required string/bytes; "
        'jsonName "" marks an embedded Go struct whose fields JSON inlines into the parent.'
    )
    dump = lambda v: json.dumps(v, separators=(",", ":"))
    out = ["{", f'"about":{dump(about)},', '"kinds":{']
    out.append(",\n".join(f"{dump(k)}:{dump(v)}" for k, v in kinds.items()))
    out.append("},")
    out.append(f'"arrays":{dump(arrays)},')
    out.append('"messages":{')
    out.append(",\n".join(f"{dump(k)}:{dump(v)}" for k, v in messages.items()))
    out.append("}")
    out.append("}")
    return "\n".join(out) + "\n"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    cargo_home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--registry", default=os.path.join(cargo_home, "registry", "src"))
    ap.add_argument(
        "--out",
        default=os.path.join(here, "..", "crates", "kube-sandbox", "src", "protobuf", "schema.json"),
    )
    args = ap.parse_args()
    pb_dir = find_crate(args.registry, K8S_PB)
    openapi_dir = find_crate(args.registry, K8S_OPENAPI_GLOB)
    kinds, arrays, messages = build(load_prost(pb_dir), load_openapi(openapi_dir))
    with open(args.out, "w") as f:
        f.write(render(kinds, arrays, messages, openapi_dir))
    print(f"wrote {os.path.normpath(args.out)}", file=sys.stderr)


if __name__ == "__main__":
    main()
