#!/usr/bin/env python3
"""Offline checks of deploy/ that kubernetes-validate cannot do. Used by deploy/ci-check.sh.

  check_manifests.py objects -k 1.35 [--label NAME] < rendered.yaml
      Every object of a `kubectl kustomize` output: custom resources (Flux, Prometheus
      Operator) are validated strictly against JSON schemas derived from the CRD models in
      the PyPI packages cloudcoil-models-fluxcd / cloudcoil-models-prometheus-operator
      (unknown fields rejected); every other object must have a Kubernetes schema in
      kubernetes-validate for that version (so a misspelt apiVersion is an error, not a
      skipped warning) and validate strictly; no Secret may carry values.

  check_manifests.py flux [--repo ROOT] -k 1.35
      The Flux tree (deploy/flux): for each cluster, what its flux-system Kustomization would
      apply, every Flux object's API version, every `path:` (exists and builds), `sourceRef`
      and `dependsOn` (exist in that cluster, no cycles), HelmRelease chart sources, namespaces
      created before use, CRD users ordered after the release that installs the CRDs, the
      Secrets the workloads need documented by a secret.example.yaml, and SOPS files really
      encrypted.

  check_manifests.py metrics --exposition METRICS.txt DASHBOARD.json... RULES.yaml...
      Every Orbiter metric (`orbiter_*`, `process_*`) that the Grafana dashboards and the
      PrometheusRule alerts query must be in the engine's /metrics text (METRICS.txt, read
      from a running engine) under that name, with every label the queries match on or
      aggregate by (besides the labels Prometheus adds per target: namespace, pod, job, ...)
      and every label value they compare with `=` (except the few values the engine exports
      only after a failure: FAILURE_ONLY_VALUES); counters end in `_total`.

Exit status 0 when everything passes, 1 otherwise; one line per problem on stderr.
"""
from __future__ import annotations

import argparse
import copy
import functools
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

# apiVersion -> module with the pydantic models of that CRD group/version.
CR_MODULES = {
    "source.toolkit.fluxcd.io/v1": "cloudcoil.models.fluxcd.source.v1",
    "kustomize.toolkit.fluxcd.io/v1": "cloudcoil.models.fluxcd.kustomize.v1",
    "helm.toolkit.fluxcd.io/v2": "cloudcoil.models.fluxcd.helm.v2",
    "notification.toolkit.fluxcd.io/v1": "cloudcoil.models.fluxcd.notification.v1",
    "notification.toolkit.fluxcd.io/v1beta3": "cloudcoil.models.fluxcd.notification.v1beta3",
    "image.toolkit.fluxcd.io/v1beta2": "cloudcoil.models.fluxcd.image.v1beta2",
    "monitoring.coreos.com/v1": "cloudcoil.models.prometheus_operator.v1",
    "monitoring.coreos.com/v1alpha1": "cloudcoil.models.prometheus_operator.v1alpha1",
}
# The API versions Flux objects in this repository must use (current GA ones).
FLUX_API = {
    "GitRepository": "source.toolkit.fluxcd.io/v1",
    "HelmRepository": "source.toolkit.fluxcd.io/v1",
    "OCIRepository": "source.toolkit.fluxcd.io/v1",
    "Bucket": "source.toolkit.fluxcd.io/v1",
    "Kustomization": "kustomize.toolkit.fluxcd.io/v1",
    "HelmRelease": "helm.toolkit.fluxcd.io/v2",
}
SOURCE_KINDS = {"GitRepository", "OCIRepository", "Bucket"}
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PersistentVolume", "StorageClass", "PriorityClass", "IngressClass",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "RuntimeClass",
}
# Groups whose CRDs a HelmRelease installs; objects of these groups must be applied after it.
CRD_PROVIDERS = {"monitoring.coreos.com": "kube-prometheus-stack"}

problems: list[str] = []


def problem(msg: str) -> None:
    problems.append(msg)
    print(f"FAIL {msg}", file=sys.stderr)


def _strict(node):
    """Reject unknown fields everywhere an object schema lists its fields, and drop the
    models' `Optional` (anyOf [X, null]): a manifest never needs an explicit null, and the
    errors then point at the field at fault instead of the whole object."""
    if isinstance(node, dict):
        alts = node.get("anyOf")
        if isinstance(alts, list) and len(alts) == 2 and {"type": "null"} in alts:
            other = alts[0] if alts[1] == {"type": "null"} else alts[1]
            del node["anyOf"]
            node.pop("default", None)
            for k, v in other.items():
                node.setdefault(k, v)
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for v in node.values():
            _strict(v)
    elif isinstance(node, list):
        for v in node:
            _strict(v)
    return node


@functools.cache
def cr_validator(api_version: str, kind: str):
    # Importing a model module costs seconds (prometheus-operator: ~2 s): derived schemas are
    # cached in $CHECK_MANIFESTS_CACHE when set (deploy/ci-check.sh sets it per run).
    cache = os.environ.get("CHECK_MANIFESTS_CACHE")
    cfile = Path(cache, re.sub(r"[^A-Za-z0-9]", "_", f"{api_version}_{kind}") + ".json") if cache else None
    if cfile and cfile.exists():
        schema = json.loads(cfile.read_text())
    else:
        module = importlib.import_module(CR_MODULES[api_version])
        model = getattr(module, kind, None)
        if model is None or not hasattr(model, "model_json_schema"):
            return None
        schema = model.model_json_schema(by_alias=True, mode="validation")
        if cfile:
            cfile.parent.mkdir(parents=True, exist_ok=True)
            cfile.write_text(json.dumps(schema))
    schema = _strict(copy.deepcopy(schema))
    # The models allow apiVersion/kind to be omitted; a manifest must have both.
    schema.setdefault("required", [])
    for key in ("apiVersion", "kind", "metadata", "spec"):
        if key in schema.get("properties", {}) and key not in schema["required"]:
            schema["required"].append(key)
    return jsonschema.Draft202012Validator(schema)


def name_of(doc: dict) -> str:
    md = doc.get("metadata") or {}
    ns = md.get("namespace")
    return f"{doc.get('kind')}/{(ns + '/') if ns else ''}{md.get('name')}"


def check_object(doc: dict, k8s_version: str, where: str) -> None:
    api, kind = doc.get("apiVersion"), doc.get("kind")
    if not api or not kind:
        problem(f"{where}: object without apiVersion/kind: {str(doc)[:120]}")
        return
    if api in CR_MODULES:
        v = cr_validator(api, kind)
        if v is None:
            problem(f"{where}: {name_of(doc)}: no kind {kind} in {api}")
            return
        for err in sorted(v.iter_errors(doc), key=lambda e: list(e.path)):
            path = ".".join(str(p) for p in err.path)
            problem(f"{where}: {name_of(doc)}: {path}: {err.message[:300]}")
    elif "." in api.split("/")[0] and not api.split("/")[0].endswith(".k8s.io") \
            and api.split("/")[0] not in ("apps", "batch", "policy", "autoscaling"):
        problem(f"{where}: {name_of(doc)}: custom resource {api} has no schema here "
                f"(add its models to CR_MODULES)")
    else:
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
        except SchemaNotFoundError:
            problem(f"{where}: {name_of(doc)}: Kubernetes {k8s_version} has no {kind} in {api}")
        except ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problem(f"{where}: {name_of(doc)}: {path}: {e.message[:300]}")
    if kind == "Secret" and (doc.get("data") or doc.get("stringData")) and "sops" not in doc:
        problem(f"{where}: {name_of(doc)}: a Secret with values in git (encrypt it with SOPS, "
                f"or reference it: see deploy/README.md)")


def load_docs(text: str, where: str) -> list[dict]:
    try:
        return [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as e:
        problem(f"{where}: YAML: {e}")
        return []


def kustomize(path: Path) -> list[dict]:
    r = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        problem(f"{path}: kubectl kustomize failed: {r.stderr.strip()[:500]}")
        return []
    return load_docs(r.stdout, str(path))


def flux_generated(path: Path) -> list[dict]:
    """What kustomize-controller applies for `path`: its kustomization.yaml, or, without one,
    every manifest below it (a subdirectory with a kustomization.yaml is built as a whole)."""
    if (path / "kustomization.yaml").exists() or (path / "kustomization.yml").exists():
        return kustomize(path)
    docs = []
    for entry in sorted(path.iterdir()):
        if entry.is_dir():
            docs += flux_generated(entry)
        elif entry.suffix in (".yaml", ".yml"):
            docs += load_docs(entry.read_text(), str(entry))
    return docs


def cmd_objects(args) -> int:
    inputs = [(f, Path(f).read_text()) for f in args.files] or [(args.label, sys.stdin.read())]
    total = 0
    for label, text in inputs:
        docs = load_docs(text, label)
        if not docs:
            problem(f"{label}: no objects rendered")
        for d in docs:
            check_object(d, args.k8s_version, label)
        total += len(docs)
    print(f"{len(inputs)} inputs, {total} objects checked, {len(problems)} problems")
    return 1 if problems else 0


def cmd_flux(args) -> int:
    repo = Path(args.repo).resolve()
    flux = repo / "deploy" / "flux"
    clusters = sorted(p for p in (flux / "clusters").iterdir() if p.is_dir())
    if not clusters:
        problem(f"{flux}/clusters: no cluster directories")
    examples = {}
    for f in repo.glob("deploy/**/secret.example.yaml"):
        for d in load_docs(f.read_text(), str(f)):
            if d.get("kind") == "Secret":
                md = d["metadata"]
                examples[(md.get("namespace"), md["name"])] = set(d.get("stringData", {}))
    for f in repo.glob("deploy/**/*.sops.yaml"):
        if "sops" not in (yaml.safe_load(f.read_text()) or {}):
            problem(f"{f}: named .sops.yaml but not encrypted by SOPS")
    for f in sorted(flux.rglob("*.yaml")):
        for d in load_docs(f.read_text(), str(f)):
            kind, api = d.get("kind"), d.get("apiVersion", "")
            if api.split("/")[0].endswith("toolkit.fluxcd.io") and FLUX_API.get(kind) != api:
                problem(f"{f}: {kind} uses {api}, expected {FLUX_API.get(kind, 'a known Flux kind')}")

    for cluster in clusters:
        cname = cluster.name
        root = flux_generated(cluster)
        fs = cluster / "flux-system"
        if not (fs / "gotk-sync.yaml").exists():
            problem(f"{fs}: gotk-sync.yaml missing")
        # name -> (Kustomization doc, objects it applies)
        kss: dict[tuple, dict] = {}
        objects_by_ks: dict[tuple, list[dict]] = {}
        sources = set()
        for d in root:
            check_object(d, args.k8s_version, f"{cname}/flux-system")
            md = d.get("metadata", {})
            key = (md.get("namespace", "flux-system"), md.get("name"))
            if d.get("kind") == "Kustomization" and d.get("apiVersion", "").startswith("kustomize.toolkit"):
                kss[key] = d
            if d.get("kind") in SOURCE_KINDS:
                sources.add((d["kind"],) + key)
        if ("flux-system", "flux-system") not in kss:
            problem(f"{cname}: no flux-system Kustomization (gotk-sync.yaml)")
        else:
            p = kss[("flux-system", "flux-system")]["spec"]["path"]
            if (repo / p).resolve() != cluster.resolve():
                problem(f"{cname}: flux-system syncs {p}, not this directory")
        objects_by_ks[("flux-system", "flux-system")] = root
        for key, ks in kss.items():
            spec = ks.get("spec", {})
            where = f"{cname}: Kustomization {key[0]}/{key[1]}"
            ref = spec.get("sourceRef", {})
            src = (ref.get("kind"), ref.get("namespace", key[0]), ref.get("name"))
            if src not in sources:
                problem(f"{where}: sourceRef {src} is not defined in this cluster")
            path = spec.get("path")
            if key == ("flux-system", "flux-system"):
                continue
            if not path:
                problem(f"{where}: no spec.path")
                continue
            target = (repo / path).resolve()
            if not target.is_dir():
                problem(f"{where}: path {path} does not exist")
                continue
            objs = flux_generated(target)
            if not objs:
                problem(f"{where}: path {path} renders no objects")
            objects_by_ks[key] = objs
            for o in objs:
                check_object(o, args.k8s_version, f"{cname}:{path}")
            for dep in spec.get("dependsOn", []):
                dkey = (dep.get("namespace", key[0]), dep["name"])
                if dkey not in kss:
                    problem(f"{where}: dependsOn {dkey} is not defined in this cluster")
            if spec.get("decryption") and spec["decryption"].get("provider") != "sops":
                problem(f"{where}: decryption provider must be sops")

        def ancestors(key, seen=()):
            if key in seen:
                problem(f"{cname}: dependsOn cycle through {key}")
                return set()
            out = set()
            for dep in kss.get(key, {}).get("spec", {}).get("dependsOn", []):
                dkey = (dep.get("namespace", key[0]), dep["name"])
                out |= {dkey} | ancestors(dkey, seen + (key,))
            return out

        everything = [o for objs in objects_by_ks.values() for o in objs]
        helm_repos = {(o["metadata"].get("namespace"), o["metadata"]["name"])
                      for o in everything if o.get("kind") == "HelmRepository"}
        releases = {(o["metadata"].get("namespace"), o["metadata"]["name"])
                    for o in everything if o.get("kind") == "HelmRelease"}
        for key, objs in objects_by_ks.items():
            before = ancestors(key) if key in kss else set()
            visible = [o for k in before | {key} for o in objects_by_ks.get(k, [])]
            namespaces = {o["metadata"]["name"] for o in visible if o.get("kind") == "Namespace"}
            namespaces |= {"flux-system", "kube-system", "default"}
            crd_releases = {o["metadata"]["name"] for o in visible
                            if o.get("kind") == "HelmRelease"
                            and o.get("spec", {}).get("install", {}).get("crds") != "Skip"}
            where = f"{cname}: Kustomization {key[1]}"
            for o in objs:
                kind, md = o.get("kind"), o.get("metadata", {})
                ns = md.get("namespace")
                group = o.get("apiVersion", "").split("/")[0]
                if kind not in CLUSTER_SCOPED and key != ("flux-system", "flux-system"):
                    if not ns:
                        problem(f"{where}: {name_of(o)} has no namespace")
                    elif ns not in namespaces:
                        problem(f"{where}: {name_of(o)}: namespace {ns} is not created by it "
                                f"or by a Kustomization it dependsOn")
                if group in CRD_PROVIDERS and CRD_PROVIDERS[group] not in crd_releases:
                    problem(f"{where}: {name_of(o)} needs the CRDs of HelmRelease "
                            f"{CRD_PROVIDERS[group]}, which is not applied before it (dependsOn)")
                if kind == "HelmRelease":
                    cs = o["spec"].get("chart", {}).get("spec", {})
                    sref = cs.get("sourceRef", {})
                    skey = (sref.get("namespace", ns), sref.get("name"))
                    if sref.get("kind") != "HelmRepository" or skey not in helm_repos:
                        problem(f"{where}: {name_of(o)}: chart sourceRef {sref} not found")
                    if not re.fullmatch(r"\d+\.\d+\.\d+", str(cs.get("version", ""))):
                        problem(f"{where}: {name_of(o)}: pin the chart version (got {cs.get('version')!r})")
                    for dep in o["spec"].get("dependsOn", []):
                        if (dep.get("namespace", ns), dep["name"]) not in releases:
                            problem(f"{where}: {name_of(o)}: dependsOn {dep} not found")
                    # Secrets named in the values must be documented by a secret.example.yaml.
                    for sname in re.findall(r"(?:existingSecret|configSecret)': '([^']+)'",
                                            str(o["spec"].get("values", {}))):
                        if (ns, sname) not in examples:
                            problem(f"{where}: {name_of(o)} needs Secret {ns}/{sname}: "
                                    f"no secret.example.yaml documents it")
                for c in (o.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
                          if kind in ("StatefulSet", "Deployment", "DaemonSet") else []):
                    for e in c.get("env", []):
                        sk = (e.get("valueFrom") or {}).get("secretKeyRef")
                        if sk:
                            keys = examples.get((ns, sk["name"]))
                            if keys is None or sk["key"] not in keys:
                                problem(f"{where}: {name_of(o)} reads Secret {ns}/{sk['name']} key "
                                        f"{sk['key']}: no secret.example.yaml documents it")
        print(f"flux cluster {cname}: {len(kss)} Kustomizations, {len(everything)} objects")

    sops_example = flux / ".sops.yaml.example"
    if sops_example.exists():
        rules = (yaml.safe_load(sops_example.read_text()) or {}).get("creation_rules", [])
        for probe in ("deploy/flux/apps/pi/orbiter-secrets.sops.yaml",
                      "deploy/flux/infrastructure/pi/hapi-fhir-postgres.sops.yaml"):
            if not any(re.search(r.get("path_regex", "$^"), probe) for r in rules):
                problem(f"{sops_example}: no creation rule matches {probe}")
    else:
        problem(f"{sops_example} missing")
    print(f"flux: {len(clusters)} clusters checked, {len(problems)} problems")
    return 1 if problems else 0


def cmd_podspec(args) -> int:
    """The engine's container as the rendered manifests give it, for the smoke test:
    the ConfigMap's orbiter.toml (written to --config-dir), then one tab-separated line each:
    ENV name value (image ENV from the Dockerfile, then the container's literal env),
    SECRET name secret key optional, ARG value (ConfigMap paths mapped to --config-dir),
    PROBE kind path port."""
    docs = load_docs(sys.stdin.read(), "podspec")
    sts = [d for d in docs if d.get("kind") == "StatefulSet" and d["metadata"]["name"] == "orbiter"]
    if len(sts) != 1:
        problem("podspec: expected one StatefulSet orbiter")
        return 1
    pod = sts[0]["spec"]["template"]["spec"]
    c = next(c for c in pod["containers"] if c["name"] == "orbiter")
    cms = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ConfigMap"}
    out = []
    for line in Path(args.dockerfile).read_text().replace("\\\n", " ").splitlines():
        if line.startswith("ENV "):
            for k, v in re.findall(r"(\w+)=(\S+)", line[4:]):
                out.append(("ENV", k, v))
    mapping = {}
    for vm in c.get("volumeMounts", []):
        vol = next((v for v in pod.get("volumes", []) if v["name"] == vm["name"]), {})
        cm = (vol.get("configMap") or {}).get("name")
        if cm and cm.startswith("orbiter-config"):
            for key, text in cms[cm].get("data", {}).items():
                Path(args.config_dir, key).write_text(text)
            mapping[vm["mountPath"].rstrip("/")] = args.config_dir
    if not mapping:
        problem("podspec: no orbiter-config ConfigMap mounted")
    for e in c.get("env", []):
        if "value" in e:
            out.append(("ENV", e["name"], e["value"]))
        elif "secretKeyRef" in (e.get("valueFrom") or {}):
            sk = e["valueFrom"]["secretKeyRef"]
            out.append(("SECRET", e["name"], sk["name"], sk["key"], str(sk.get("optional", False)).lower()))
    for a in c.get("args", []):
        for src, dst in mapping.items():
            if a == src or a.startswith(src + "/"):
                a = dst + a[len(src):]
        out.append(("ARG", a))
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    for kind in ("startup", "liveness", "readiness"):
        probe = c.get(kind + "Probe")
        if probe and "httpGet" in probe:
            port = probe["httpGet"]["port"]
            out.append(("PROBE", kind, probe["httpGet"]["path"], str(ports.get(port, port))))
    for row in out:
        if any("\t" in x or "\n" in x for x in row):
            problem(f"podspec: value with a tab or newline: {row}")
        print("\t".join(row))
    return 1 if problems else 0


# Labels Prometheus (the ServiceMonitor's relabelling) adds to every series of a target, and
# the histogram bucket bound: never in the engine's own exposition.
TARGET_LABELS = {"namespace", "pod", "job", "instance", "service", "endpoint", "container", "le"}
# Label values the engine exports only once something failed (the series is created by its
# first increment), which the smoke run, with its one good message, never produces. A query may
# compare with them although the exposition has no such sample yet; the label itself must
# still be there. Where the engine sets them: engine/src/route.rs (channel `failed`, destination
# `failed` on give-up) and engine/src/deliver/mod.rs (destination outcome `failed`, `retry`).
FAILURE_ONLY_VALUES = {
    ("orbiter_channel_messages_total", "status", "failed"),
    ("orbiter_deliveries_total", "outcome", "failed"),
    ("orbiter_deliveries_total", "outcome", "retry"),
}
SELECTOR = re.compile(r"\b((?:orbiter|process)_[a-z0-9_]+)\s*(\{[^}]*\})?")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def parse_exposition(text: str):
    """{family: (type, [labels dict of each sample])} from Prometheus text format 0.0.4."""
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            types[name] = kind.strip()
            samples.setdefault(name, [])
        elif line and not line.startswith("#"):
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s", line)
            if not m:
                continue
            name, labels = m.group(1), dict((k, v) for k, _, v in MATCHER.findall(m.group(2) or ""))
            family = name
            if name not in types:
                family = re.sub(r"_(bucket|sum|count)$", "", name)
            samples.setdefault(family, []).append(labels)
    return types, samples


def queries(path: Path):
    """(where, PromQL) of every query in a dashboard (targets, templating) or alert rule file."""
    if path.suffix == ".json":
        d = json.loads(path.read_text())
        panels = list(d.get("panels", []))
        for p in list(panels):
            panels.extend(p.get("panels", []))  # rows
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    yield f"{path.name}: panel {p.get('title')!r}", t["expr"]
        for v in d.get("templating", {}).get("list", []):
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            if v.get("type") == "query" and q:
                yield f"{path.name}: variable {v.get('name')}", q
    else:
        for doc in load_docs(path.read_text(), path.name):
            if doc.get("kind") != "PrometheusRule":
                continue
            for g in doc["spec"].get("groups", []):
                for r in g.get("rules", []):
                    yield f"{path.name}: {r.get('alert') or r.get('record')}", r["expr"]


def cmd_metrics(args) -> int:
    types, samples = parse_exposition(Path(args.exposition).read_text())
    for name, kind in types.items():
        if kind == "counter" and not name.endswith("_total"):
            problem(f"metrics: counter {name} does not end in _total")
    checked = 0
    for f in args.files:
        for where, expr in queries(Path(f)):
            used_labels = set()
            for name, matchers in SELECTOR.findall(expr):
                checked += 1
                family = name if name in types else re.sub(r"_(bucket|sum|count)$", "", name)
                if family not in types:
                    problem(f"{where}: {name} is not exposed by the engine")
                    continue
                if family != name and types[family] != "histogram" and types[family] != "summary":
                    problem(f"{where}: {name}: {family} is a {types[family]}, not a histogram")
                present = samples.get(family, [])
                for label, op, value in MATCHER.findall(matchers):
                    if label in TARGET_LABELS:
                        continue
                    used_labels.add(label)
                    if not any(label in s for s in present):
                        problem(f"{where}: {name} has no label {label!r}")
                    elif op == "=" and not any(s.get(label) == value for s in present) \
                            and (family, label, value) not in FAILURE_ONLY_VALUES:
                        problem(f"{where}: {name}{{{label}={value!r}}} matches no series")
                used_labels |= {k for s in present for k in s}
            for group in BY.findall(expr):
                for label in (x.strip() for x in group.split(",")):
                    if label and label not in TARGET_LABELS and label not in used_labels:
                        problem(f"{where}: aggregates by {label!r}, which none of its metrics has")
    if problems:
        return 1
    print(f"metrics: {checked} metric selectors in {len(args.files)} files match the engine's /metrics")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("objects")
    o.add_argument("-k", "--k8s-version", required=True)
    o.add_argument("--label", default="-", help="name of stdin in messages")
    o.add_argument("files", nargs="*", help="rendered manifests (default: stdin)")
    f = sub.add_parser("flux")
    f.add_argument("-k", "--k8s-version", required=True)
    f.add_argument("--repo", default=str(Path(__file__).resolve().parents[2]))
    p = sub.add_parser("podspec")
    p.add_argument("--config-dir", required=True)
    p.add_argument("--dockerfile", default=str(Path(__file__).resolve().parents[1] / "Dockerfile"))
    m = sub.add_parser("metrics")
    m.add_argument("--exposition", required=True, help="a /metrics body of a running engine")
    m.add_argument("files", nargs="+", help="Grafana dashboards (.json), PrometheusRule files")
    args = ap.parse_args()
    return {"objects": cmd_objects, "flux": cmd_flux, "podspec": cmd_podspec, "metrics": cmd_metrics}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
