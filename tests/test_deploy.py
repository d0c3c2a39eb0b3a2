"""The deployment files (deploy/, the Dockerfile) checked offline: every Kubernetes manifest
against the API schemas ``kubernetes-validate`` ships (strict: unknown fields are errors), the
ConfigMap's config with routecast's own parser, the Deployment against the Service, the config,
the Secret and the server's drain, Prometheus' scrape config against the server's port and
path, HAProxy's and nginx's configs with their own checkers."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from routecast.server.config import Config, parse_config

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
#: A Kubernetes version whose schemas kubernetes-validate ships (the manifests use the
#: preStop `sleep` action, GA since 1.30).
KUBE_VERSION = "1.33.0"
CONFIG_PATH = "/etc/routecast/routecast.yaml"


@cache
def manifests() -> dict[str, dict[str, Any]]:
    """``kind -> document`` of every manifest but the kustomization."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert doc["kind"] not in found, f"two {doc['kind']}s"
            found[doc["kind"]] = doc
    return found


def container() -> dict[str, Any]:
    spec = manifests()["Deployment"]["spec"]["template"]["spec"]
    assert len(spec["containers"]) == 1
    result: dict[str, Any] = spec["containers"][0]
    return result


def served_config() -> Config:
    return parse_config(yaml.safe_load(manifests()["ConfigMap"]["data"]["routecast.yaml"]),
                        where="deploy/kubernetes/configmap.yaml")


def container_port() -> int:
    (port,) = (p for p in container()["ports"] if p["name"] == "http")
    number: int = port["containerPort"]
    return number


def arg(name: str) -> str:
    args: list[str] = container()["args"]
    return args[args.index(name) + 1]


@pytest.mark.parametrize("path", sorted(p.name for p in KUBE.glob("*.yaml")
                                        if p.name != "kustomization.yaml"))
def test_manifest_validates_against_the_kubernetes_schema(path: str) -> None:
    import kubernetes_validate  # type: ignore[import-untyped]

    docs = list(yaml.safe_load_all((KUBE / path).read_text(encoding="utf-8")))
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            pytest.fail(f"{path}: {doc['kind']} at {where}: {e.message}")


def test_the_validator_refuses_what_the_api_server_would() -> None:
    """Strict mode catches a misspelt field and a wrong type (else the test above is empty)."""
    import copy

    import kubernetes_validate

    bad = copy.deepcopy(manifests()["Deployment"])
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="httpGett"):
        kubernetes_validate.validate(bad, KUBE_VERSION, strict=True)
    bad = copy.deepcopy(manifests()["Deployment"])
    bad["spec"]["replicas"] = "3"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBE_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}


def test_configmap_holds_a_config_the_server_accepts() -> None:
    config = served_config()
    assert config.storage.url_env == "ROUTECAST_DATABASE_URL"
    assert config.state.redis_url_env == "ROUTECAST_REDIS_URL"
    # The database URL resolves from the environment the Secret provides.
    secret = manifests()["Secret"]["stringData"]
    assert config.storage.database_url(secret) == secret["ROUTECAST_DATABASE_URL"]
    assert config.state.resolved_redis_url(secret) == secret["ROUTECAST_REDIS_URL"]
    assert config.storage.database_url(secret).startswith("postgresql://")  # type: ignore[union-attr]


def test_replica_counts_agree() -> None:
    replicas = manifests()["Deployment"]["spec"]["replicas"]
    assert replicas == 3
    assert served_config().state.replicas == replicas
    hpa = manifests()["HorizontalPodAutoscaler"]["spec"]
    assert hpa["minReplicas"] == replicas and hpa["maxReplicas"] >= replicas
    assert hpa["scaleTargetRef"]["name"] == manifests()["Deployment"]["metadata"]["name"]
    # A voluntary disruption leaves at least two replicas serving.
    assert manifests()["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def test_every_env_var_the_config_reads_comes_from_the_secret() -> None:
    config = served_config()
    needed = {m.api_key_env for m in config.models.values() if m.api_key_env}
    needed |= {config.storage.url_env, config.state.redis_url_env} - {None}  # type: ignore[arg-type]
    assert needed  # the example reads keys and URLs from the environment
    secret = manifests()["Secret"]
    env = {e["name"]: e for e in container().get("env", [])}
    for name in needed:
        assert name in env, f"the Deployment does not set {name}"
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"]
    # Placeholders are marked as such: nothing that looks like a real key is committed.
    for key, value in secret["stringData"].items():
        assert "REPLACE-ME" in value, f"{key} must be an obvious placeholder"


def test_deployment_serves_the_mounted_config_on_the_probed_port() -> None:
    c = container()
    assert c["args"][0] == "serve"
    assert arg("--config") == CONFIG_PATH
    assert arg("--host") == "0.0.0.0"
    assert int(arg("--port")) == container_port()
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == str(Path(CONFIG_PATH).parent))
    volumes = {v["name"]: v for v in manifests()["Deployment"]["spec"]["template"]["spec"]
               ["volumes"]}
    source = volumes[mount["name"]]["configMap"]
    assert source["name"] == manifests()["ConfigMap"]["metadata"]["name"]
    assert {i["path"] for i in source["items"]} == {Path(CONFIG_PATH).name}
    # Liveness and start-up: the process answers; readiness: it should get requests.
    paths = {"readinessProbe": "/ready", "livenessProbe": "/health", "startupProbe": "/health"}
    for probe, path in paths.items():
        get = c[probe]["httpGet"]
        assert get["path"] == path
        assert get["port"] in ("http", container_port())


def test_service_selects_the_pods_and_targets_their_port() -> None:
    service = manifests()["Service"]["spec"]
    labels = manifests()["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    assert manifests()["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert manifests()["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] \
        .items() <= labels.items()
    (port,) = service["ports"]
    assert port["targetPort"] in ("http", container_port())


def drain_seconds() -> int:
    """The drain ``routecast serve`` does on SIGTERM (uvicorn's timeout_graceful_shutdown),
    read from its source (``cli/serve.py`` and ``server/``; not the fleet's replayer)."""
    src = ROOT / "src" / "routecast"
    files = [src / "cli" / "serve.py", *(src / "server").rglob("*.py")]
    found = {int(m) for path in files
             for m in re.findall(r"timeout_graceful_shutdown[\"']?\s*[=:]\s*(\d+)",
                                 path.read_text())}
    assert len(found) == 1, (f"expected one drain timeout in routecast serve, found {found}: "
                             "update this test to where the drain is set")
    return found.pop()


def test_termination_grace_covers_the_pre_stop_sleep_and_the_drain() -> None:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    pre_stop = container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    readiness = container()["readinessProbe"]
    # Endpoints drop the pod as soon as it terminates; the sleep covers kube-proxy and load
    # balancers catching up, and is at least one readiness period.
    assert pre_stop >= readiness["periodSeconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain_seconds()


def test_pod_runs_unprivileged_within_limits() -> None:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    sc = container()["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    resources = container()["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    # A read-only root filesystem: whatever the server writes goes to a mounted volume.
    assert any(m["mountPath"] == "/tmp" for m in container()["volumeMounts"])


def test_dockerfile_builds_the_image_the_deployment_runs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert container()["image"] == "routecast:0.1.0"
    assert "docker build -t routecast:0.1.0" in dockerfile
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version is not None and container()["image"].endswith(f":{version[1]}")
    user = re.search(r"^USER (\d+)", dockerfile, re.M)
    uid = manifests()["Deployment"]["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert user is not None and int(user[1]) == uid
    assert '"routecast"' in dockerfile and f"EXPOSE {container_port()}" in dockerfile


def test_prometheus_scrapes_the_port_and_path_the_server_serves() -> None:
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    annotations = manifests()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == container_port()
    assert annotations["prometheus.io/path"] == "/metrics"
    kube = jobs["routecast-kubernetes"]
    assert kube["kubernetes_sd_configs"] == [{"role": "pod"}]
    assert kube["metrics_path"] == "/metrics"
    # The relabelling turns a pod address and its port annotation into host:port.
    rule = next(r for r in kube["relabel_configs"] if r.get("target_label") == "__address__")
    match = re.fullmatch(rule["regex"], f"10.1.2.3:9999;{annotations['prometheus.io/port']}")
    assert match is not None
    assert match.expand(rule["replacement"].replace("$", "\\")) == f"10.1.2.3:{container_port()}"
    keep = [r for r in kube["relabel_configs"] if r.get("action") == "keep"]
    labels = manifests()["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert any(r["regex"] == labels["app.kubernetes.io/name"] for r in keep)
    static = jobs["routecast-static"]
    assert static["metrics_path"] == "/metrics"
    # The static targets are the replicas of the one-machine example, not the balancer.
    targets = set(static["static_configs"][0]["targets"])
    assert targets == {f"127.0.0.1:{p}" for p in haproxy_backend_ports()}


def test_the_server_serves_metrics_and_health_where_the_files_say() -> None:
    import urllib.request

    from routecast.server.app import create_app
    from tests.stub_upstream import LiveServer, StubUpstream

    with StubUpstream() as stub:
        config = parse_config({"models": {"m": {"base_url": stub.url}},
                               "storage": {"db": None}})
        with LiveServer(create_app(config, env={})) as live:
            for path in ("/health", "/ready", "/metrics"):
                with urllib.request.urlopen(f"{live.url}{path}", timeout=5) as r:
                    assert r.status == 200
                    body = r.read().decode()
                    assert "routecast_" in body if path == "/metrics" else (
                        '"status":"ok"' in body if path == "/health"
                        else '"status":"ready"' in body)


def haproxy_backend_ports() -> set[int]:
    text = (DEPLOY / "haproxy" / "haproxy.cfg").read_text(encoding="utf-8")
    return {int(p) for p in re.findall(r"^\s*server \S+ 127\.0\.0\.1:(\d+)", text, re.M)}


def test_haproxy_config_passes_haproxy_check() -> None:
    from tests.services import missing

    haproxy = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if haproxy is None:
        missing("HAProxy", "apt-get install haproxy")
    assert haproxy is not None
    path = DEPLOY / "haproxy" / "haproxy.cfg"
    done = subprocess.run([haproxy, "-c", "-f", str(path)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    text = path.read_text(encoding="utf-8")
    assert "option httpchk GET /ready" in text and "option redispatch" in text
    assert haproxy_backend_ports() == {8001, 8002, 8003}


def test_nginx_config_passes_nginx_check(tmp_path: Path) -> None:
    from tests.services import missing

    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                      else None)
    if nginx is None:
        missing("nginx", "apt-get install nginx")
    assert nginx is not None
    path = DEPLOY / "nginx" / "nginx.conf"
    # -e: errors to stderr, not the compiled-in /var/log path; -p: a prefix of our own.
    done = subprocess.run([nginx, "-t", "-q", "-e", "stderr", "-p", str(tmp_path), "-c",
                           str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    ports = {int(p) for p in re.findall(r"server 127\.0\.0\.1:(\d+)", path.read_text())}
    assert ports == haproxy_backend_ports()
