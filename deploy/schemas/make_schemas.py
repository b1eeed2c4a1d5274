#!/usr/bin/env python3
"""make_schemas.py KV_SCHEMA_DIR: (re)write the self-contained JSON schemas in this folder.

KV_SCHEMA_DIR is a folder of Kubernetes "local-strict" JSON schemas as shipped by the PyPI
package kubernetes-validate (kubernetes_validate/kubernetes-json-schema/v1.32.0-local-strict):
one file per kind whose "$ref"s point into a shared _definitions.json. For each kind that
deploy/k8s renders, and for the two custom resources (src/*.json, written for this
project: they refer to core definitions such as the PodTemplateSpec by name), this writes
one file that carries every definition it reaches under "$defs", so check-jsonschema needs
nothing else (no network). Run by hand when the Kubernetes version changes; README.md here
gives the provenance. Python standard library only.
"""
import json
import os
import sys

CORE_KINDS = ["configmap-v1", "secret-v1", "service-v1", "persistentvolumeclaim-v1",
              "poddisruptionbudget-policy-v1"]
CUSTOM = ["mpijob-kubeflow-v2beta1", "leaderworkerset-x-k8s-v1"]
PREFIX = "/api/_definitions.json#/$defs/"   # how kubernetes-validate's files refer to a definition
LOCAL = "#/$defs/"


def refs(node):
    """Yields every "$ref" string under node."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            else:
                yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


def rewrite(node):
    """The same tree with kubernetes-validate's definition references made local."""
    if isinstance(node, dict):
        return {k: (LOCAL + v[len(PREFIX):] if k == "$ref" and isinstance(v, str) and v.startswith(PREFIX)
                    else rewrite(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [rewrite(v) for v in node]
    return node


def standalone(schema, defs):
    """schema with the closure of the definitions it names (local "#/$defs/NAME" form)."""
    schema = rewrite(schema)
    defs = dict(defs, **schema.get("$defs", {}))   # a schema's own definitions come first
    need, todo = {}, [r for r in refs(schema)]
    while todo:
        r = todo.pop()
        if not r.startswith(LOCAL):
            sys.exit(f"make_schemas: unexpected reference {r}")
        name = r[len(LOCAL):]
        if name in need:
            continue
        if name not in defs:
            sys.exit(f"make_schemas: no definition {name}")
        need[name] = rewrite(defs[name])
        todo.extend(refs(need[name]))
    out = {k: v for k, v in schema.items() if k not in ("$id", "$defs")}
    out["$defs"] = {k: need[k] for k in sorted(need)}
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    src, here = sys.argv[1], os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(src, "_definitions.json")) as f:
        defs = json.load(f)["$defs"]
    jobs = [(os.path.join(src, k + ".json"), k) for k in CORE_KINDS]
    jobs += [(os.path.join(here, "src", k + ".json"), k) for k in CUSTOM]
    for path, name in jobs:
        with open(path) as f:
            schema = json.load(f)
        out = os.path.join(here, name + ".json")
        with open(out + ".tmp", "w") as f:
            json.dump(standalone(schema, defs), f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(out + ".tmp", out)
        print(f"{out}: {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
