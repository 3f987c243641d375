#!/usr/bin/env python3
"""Generate kubeconform-style standalone-strict JSON schemas, offline.

Built-in kinds come from Kubernetes' swagger.json (api/openapi-spec/swagger.json in the
k8s.io/kubernetes Go module zip); CRD kinds from CustomResourceDefinition YAML files.
Output file names follow kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json`:
  deployment-apps-v1.json, service-v1.json, servicemonitor-monitoring-v1.json, ...

The transformation reproduces `openapi2jsonschema --kubernetes --expanded --stand-alone --strict`
(the tool behind yannh/kubernetes-json-schema) for built-in kinds, and kubeconform's
scripts/openapi2jsonschema.py for CRDs, but only for the kinds asked for.

Run by ./generate beside this file, which fetches the sources at pinned versions.

usage: generate.py --swagger swagger.json --out DIR [--crd crd.yaml ...]
                          [--compact] [--strip-descriptions] GVK ...
   GVK like apps/v1/Deployment or v1/Service (core group)
"""
import argparse
import copy
import json
import os
import sys


# ---------- the strict transformation: closed objects, nullable optional fields ----------
def additional_properties(data):
    """Add additionalProperties: false to every nested object that has properties."""
    if isinstance(data, dict):
        for v in data.values():
            if isinstance(v, dict):
                if "properties" in v and "additionalProperties" not in v \
                        and not v.get("x-kubernetes-preserve-unknown-fields"):
                    v["additionalProperties"] = False
                additional_properties(v)
            elif isinstance(v, list):
                for x in v:
                    additional_properties(x)
    return data


def replace_int_or_string(data):
    if isinstance(data, dict):
        new = {}
        for k, v in data.items():
            if isinstance(v, dict) and v.get("format") == "int-or-string":
                new[k] = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
            else:
                new[k] = replace_int_or_string(v)
        return new
    if isinstance(data, list):
        return [replace_int_or_string(x) for x in data]
    return data


def allow_null_optional_fields(data, parent=None, grand_parent=None, key=None):
    """type: X -> type: [X, "null"] unless the field is listed as required."""
    if not isinstance(data, dict):
        return data
    new = {}
    for k, v in data.items():
        new_v = v
        if isinstance(v, dict):
            new_v = allow_null_optional_fields(v, data, parent, k)
        elif isinstance(v, list):
            new_v = [allow_null_optional_fields(x, v, parent, k) for x in v]
        elif isinstance(v, str):
            is_non_null_type = k == "type" and v != "null"
            is_required = bool(grand_parent) and isinstance(grand_parent, dict) \
                and "required" in grand_parent and key in grand_parent["required"]
            if is_non_null_type and not is_required:
                new_v = [v, "null"]
        new[k] = new_v
    return new


def resolve_refs(node, defs, depth=0):
    if depth > 60:
        raise RecursionError("recursive $ref; kind not supported")
    if isinstance(node, dict):
        if "$ref" in node:
            name = node["$ref"].split("/")[-1]
            return resolve_refs(copy.deepcopy(defs[name]), defs, depth + 1)
        return {k: resolve_refs(v, defs, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve_refs(x, defs, depth) for x in node]
    return node


def strip_descriptions(node):
    if isinstance(node, dict):
        return {k: strip_descriptions(v) for k, v in node.items()
                if not (k == "description" and isinstance(v, str))}
    if isinstance(node, list):
        return [strip_descriptions(x) for x in node]
    return node


# ---------- built-in kinds from swagger.json ----------
def builtin_schemas(swagger_path, gvks):
    with open(swagger_path) as f:
        defs = json.load(f)["definitions"]
    defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = {
        "oneOf": [{"type": "string"}, {"type": "integer"}]}
    defs["io.k8s.apimachinery.pkg.api.resource.Quantity"] = {
        "oneOf": [{"type": "string"}, {"type": "number"}]}
    index = {}
    for name, d in defs.items():
        for gvk in d.get("x-kubernetes-group-version-kind", []):
            props = d.get("properties", {})
            av = (gvk["group"] + "/" if gvk["group"] else "") + gvk["version"]
            if "apiVersion" in props:
                props["apiVersion"].setdefault("enum", [])
                if av not in props["apiVersion"]["enum"]:
                    props["apiVersion"]["enum"].append(av)
            if "kind" in props:
                props["kind"].setdefault("enum", [])
                if gvk["kind"] not in props["kind"]["enum"]:
                    props["kind"]["enum"].append(gvk["kind"])
            index[(av, gvk["kind"])] = name
    additional_properties(defs)  # strict: every nested object closed

    out = {}
    for want in gvks:
        av, kind = want.rsplit("/", 1)
        name = index.get((av, kind))
        if name is None:
            sys.exit("not in swagger: %s" % want)
        spec = copy.deepcopy(defs[name])
        spec["$schema"] = "http://json-schema.org/schema#"
        spec.setdefault("type", "object")
        spec["additionalProperties"] = False
        spec = resolve_refs(spec, defs)
        if "properties" in spec:
            props = spec["properties"]
            additional_properties({"_": {"properties": props}})
            props = replace_int_or_string(props)
            spec["properties"] = allow_null_optional_fields(props)
        out[file_name(kind, av)] = spec
    return out


# ---------- CRDs ----------
def crd_schemas(paths):
    import yaml  # only needed for CRDs
    out = {}
    for p in paths:
        with open(p) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for d in docs:
            if d.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = d["spec"]["group"], d["spec"]["names"]["kind"]
            for v in d["spec"]["versions"]:
                schema = v.get("schema", {}).get("openAPIV3Schema")
                if not schema:
                    continue
                schema = copy.deepcopy(schema)
                additional_properties({"_": schema})       # strict incl. root
                schema = replace_int_or_string(schema)
                schema["$schema"] = "http://json-schema.org/schema#"
                out[file_name(kind, group + "/" + v["name"])] = schema
    return out


def file_name(kind, api_version):
    """Same as kubeconform pkg/registry schemaPath: {kind}{-firstGroupLabel}-{version}.json"""
    parts = api_version.split("/")
    suffix = "-" + parts[0].split(".")[0].lower()
    if len(parts) > 1:
        suffix += "-" + parts[1].lower()
    return kind.lower() + suffix + ".json"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--swagger")
    ap.add_argument("--crd", action="append", default=[])
    ap.add_argument("--out", required=True)
    ap.add_argument("--compact", action="store_true", help="no indentation")
    ap.add_argument("--strip-descriptions", action="store_true")
    ap.add_argument("gvk", nargs="*")
    a = ap.parse_args()
    schemas = {}
    if a.gvk:
        schemas.update(builtin_schemas(a.swagger, a.gvk))
    schemas.update(crd_schemas(a.crd))
    os.makedirs(a.out, exist_ok=True)
    for fn, s in sorted(schemas.items()):
        if a.strip_descriptions:
            s = strip_descriptions(s)
        with open(os.path.join(a.out, fn), "w") as f:
            if a.compact:
                json.dump(s, f, separators=(",", ":"), sort_keys=True)
            else:
                json.dump(s, f, indent=2)
            f.write("\n")
        print("wrote", fn, os.path.getsize(os.path.join(a.out, fn)))


if __name__ == "__main__":
    main()
