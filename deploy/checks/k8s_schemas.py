#!/usr/bin/env python3
"""Build kubeconform schemas offline from the Kubernetes OpenAPI spec and CRD manifests.

kubeconform normally downloads its JSON schemas from GitHub, which CI cannot reach. The same
information ships in Go modules that the Go module proxy serves: ``k8s.io/kubernetes`` carries
``api/openapi-spec/swagger.json`` (OpenAPI v2, every built-in kind) and operator modules carry their
CRDs. This script turns them into the layout kubeconform expects for a local ``-schema-location``::

    OUT/<kind>-<first label of group>-<version>.json     e.g. deployment-apps-v1.json, pod-v1.json,
                                                           scaledobject-keda-v1alpha1.json

Each file is standalone: the kind's schema plus only the definitions it reaches (so recursive types
such as JSONSchemaProps still work), made strict the way kubectl validation is: every object that
lists ``properties`` rejects unknown fields unless it preserves unknown fields, ``int-or-string``
accepts both, and ``Quantity`` accepts numbers as well as strings (YAML ``cpu: 1``).

Standard library only for the OpenAPI part; CRD YAML needs PyYAML (a dependency of the dev extra).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

_DEF_PREFIX = "#/definitions/"
_INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def _strict(node: Any) -> Any:
    """Recursively copy ``node``, denying unknown fields and widening int-or-string."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string" or node.get("x-kubernetes-int-or-string") is True:
        out = {k: v for k, v in node.items() if k not in {"type", "format", "anyOf", "x-kubernetes-int-or-string"}}
        out.update(_INT_OR_STRING)
        return out
    out = {key: _strict(value) for key, value in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEF_PREFIX):
            found.add(ref[len(_DEF_PREFIX) :])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def _closure(name: str, definitions: dict[str, Any]) -> dict[str, Any]:
    """Definitions reachable from ``name`` (inclusive of recursion targets, exclusive of ``name``)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        found: set[str] = set()
        _refs(definitions[current], found)
        for ref in found - seen:
            if ref not in definitions:
                raise SystemExit("swagger: %s refers to missing definition %s" % (current, ref))
            seen.add(ref)
            todo.append(ref)
    return {ref: definitions[ref] for ref in sorted(seen)}


def _file_name(kind: str, group: str, version: str) -> str:
    # Mirrors kubeconform's {{ .ResourceKind }}{{ .KindSuffix }}: only the first label of the group.
    suffix = "-" + group.split(".")[0].lower() if group else ""
    return "%s%s-%s.json" % (kind.lower(), suffix, version.lower())


def _write(out_dir: Path, name: str, schema: dict[str, Any], written: dict[str, str], origin: str) -> None:
    if name in written:
        # The same kind in two groups sharing a first label would collide; first one wins, loudly.
        sys.stderr.write("k8s_schemas: %s from %s already written from %s; kept the first\n" % (name, origin, written[name]))
        return
    written[name] = origin
    (out_dir / name).write_text(json.dumps(schema, separators=(",", ":")), encoding="utf-8")


def _from_swagger(path: Path, out_dir: Path, written: dict[str, str]) -> None:
    spec = json.loads(path.read_text(encoding="utf-8"))
    definitions: dict[str, Any] = spec["definitions"]
    if _QUANTITY in definitions:
        quantity = dict(definitions[_QUANTITY])
        quantity.pop("type", None)
        quantity["oneOf"] = [{"type": "string"}, {"type": "number"}]
        definitions[_QUANTITY] = quantity
    strict = {name: _strict(schema) for name, schema in definitions.items()}
    for name, schema in definitions.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            standalone = dict(strict[name])
            standalone["$schema"] = "http://json-schema.org/draft-04/schema#"
            standalone["definitions"] = _closure(name, strict)
            _write(out_dir, _file_name(gvk["kind"], gvk["group"], gvk["version"]), standalone, written, name)


def _from_crds(path: Path, out_dir: Path, written: dict[str, str]) -> None:
    try:
        import yaml
    except ImportError:
        raise SystemExit("k8s_schemas: PyYAML is needed to read CRDs (pip install -e '.[dev]')") from None
    with path.open(encoding="utf-8") as handle:
        documents = [doc for doc in yaml.safe_load_all(handle) if doc]
    for doc in documents:
        if doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        for version in spec.get("versions", []):
            schema = version.get("schema", {}).get("openAPIV3Schema")
            if schema is None:
                continue
            standalone = _strict(schema)
            standalone["$schema"] = "http://json-schema.org/draft-04/schema#"
            origin = "%s (%s)" % (path.name, version["name"])
            _write(out_dir, _file_name(spec["names"]["kind"], spec["group"], version["name"]), standalone, written, origin)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swagger", type=Path, required=True, help="Kubernetes api/openapi-spec/swagger.json")
    parser.add_argument("--crd", type=Path, action="append", default=[], help="CRD manifest (YAML); repeatable")
    parser.add_argument("--out", type=Path, required=True, help="output folder (replaced atomically)")
    args = parser.parse_args(argv)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".k8s-schemas-", dir=args.out.parent))
    try:
        written: dict[str, str] = {}
        _from_swagger(args.swagger, staging, written)
        for crd in args.crd:
            _from_crds(crd, staging, written)
        if os.path.isdir(args.out):
            shutil.rmtree(args.out)
        staging.rename(args.out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    sys.stderr.write("k8s_schemas: %d schemas in %s\n" % (len(written), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
