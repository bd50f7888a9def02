"""The container deployment, checked without a container engine: the Dockerfile and its
entry point, the compose file (against the Compose Specification schema shipped in
deploy/compose/schema/) and the Kubernetes manifests (against the Kubernetes JSON schemas of
the `kubernetes-validate` package). Nothing is downloaded."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from deploy.kafka_topics import DEFAULT_PARTITIONS
from deploy.local.launcher import DEFAULT_GATEWAY_PORT, SERVICE_PORTS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
K8S_DIR = DEPLOY / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = DEPLOY / "image" / "entrypoint.sh"

#: The services that exist: a `services/<name>/service.py`.
SERVICES = sorted(path.parent.name for path in (ROOT / "services").glob("*/service.py"))
PORTS: dict[str, int] = {**SERVICE_PORTS, "gateway": DEFAULT_GATEWAY_PORT}
CONSUMERS = ("points", "leaderboards", "credits", "badges")
K8S_VERSIONS = ("1.29", "1.33")  # the oldest we claim, and a current one


# --- YAML ----------------------------------------------------------------------------------


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one
    silently). Keys brought in by a `<<` merge may be overridden, as YAML intends."""

    # The pristine resolvers: nameko's config loading adds an implicit `${VAR:default}`
    # resolver to SafeLoader itself, which would rewrite compose's `${VAR:-x}` values.
    yaml_implicit_resolvers = {
        first: list(resolvers)
        for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=StrictLoader) if doc is not None]


def load(path: Path) -> Any:
    (document,) = load_all(path)
    return document


YAML_FILES = sorted(
    [*COMPOSE_DIR.rglob("*.yml"), *COMPOSE_DIR.rglob("*.yaml"), *K8S_DIR.rglob("*.y*ml")]
)


def test_there_is_something_to_check():
    names = {path.relative_to(DEPLOY).as_posix() for path in YAML_FILES}
    assert {"compose/compose.yml", "compose/prometheus.yml", "k8s/kustomization.yaml"} <= names
    assert sorted(PORTS) == SERVICES, "a service without a port (or the reverse)"


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_yaml_file_is_well_formed(path):
    assert load_all(path), f"{path} is empty"


def test_the_strict_loader_refuses_duplicate_keys_but_allows_merges():
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.load("a: 1\na: 2\n", Loader=StrictLoader)
    merged = yaml.load("x: &x {a: 1, b: 2}\ny: {<<: *x, b: 3}\n", Loader=StrictLoader)
    assert merged["y"] == {"a": 1, "b": 3}


# --- Dockerfile and entry point ------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions():
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def test_the_base_image_is_pinned_by_tag_and_digest():
    args = dict(
        rest.split("=", 1) for keyword, rest in dockerfile_instructions() if keyword == "ARG"
    )
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+@sha256:[0-9a-f]{64}", base), base
    for stage in stages():
        keyword, rest = stage[0]
        assert rest.split()[0] == "${PYTHON_IMAGE}", f"FROM {rest}: not the pinned base"


def test_the_image_is_multi_stage_and_the_runtime_runs_as_a_non_root_user():
    all_stages = stages()
    assert len(all_stages) >= 2
    runtime = all_stages[-1]
    assert "AS runtime" in runtime[0][1]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in {"0", "root"}
    # The runtime takes the installed environment from the builder, and installs nothing.
    assert any(k == "COPY" and "--from=builder" in rest for k, rest in runtime)
    assert not any(k == "RUN" and "pip install" in rest for k, rest in runtime)


def test_the_image_installs_only_the_runtime_dependencies():
    text = DOCKERFILE.read_text()
    assert '["project"]["dependencies"]' in text
    assert not re.search(r"\[(local|dev)\]|optional-dependencies", text)


def test_the_image_entry_point_command_and_healthcheck():
    runtime = dict(stages()[-1])
    assert json.loads(runtime["ENTRYPOINT"]) == ["skillquest-entrypoint"]
    (service,) = json.loads(runtime["CMD"])
    assert service in SERVICES
    assert "skillquest-entrypoint healthcheck" in " ".join(
        json.loads(runtime["HEALTHCHECK"].split("CMD", 1)[1])
    )
    exposed = {int(port) for port in runtime["EXPOSE"].split()}
    assert exposed == set(PORTS.values())


def dockerignore_excludes(path: str) -> bool:
    """Whether the build context leaves `path` out (.dockerignore: the last matching pattern
    wins; a pattern that matches a parent directory matches what is under it)."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        parts = path.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def test_every_file_the_dockerfile_copies_is_in_the_build_context():
    sources = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "COPY" and "--from=" not in rest:
            words = [word for word in rest.split() if not word.startswith("--")]
            sources += words[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not dockerignore_excludes(source), f"{source} is left out by .dockerignore"
    for kept_out in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", ".data/x", "bench"):
        assert dockerignore_excludes(kept_out), kept_out
    assert not dockerignore_excludes("services/points/rules.yml")


def entrypoint_services() -> dict[str, int]:
    text = ENTRYPOINT.read_text()
    ports = re.findall(r"^\s+([a-z]+)\) echo \"?(?:\$\{GATEWAY_PORT:-)?(\d+)", text, re.M)
    return {name: int(port) for name, port in ports}


def test_the_entry_point_runs_exactly_the_real_services_on_their_usual_ports():
    assert entrypoint_services() == PORTS
    text = ENTRYPOINT.read_text()
    dispatch = re.search(r"^\s+((?:[a-z]+ \| )+[a-z]+)\)\n\s+load_file_variables", text, re.M)
    assert dispatch, "no dispatch of service names"
    assert sorted(dispatch.group(1).split(" | ")) == SERVICES
    assert 'exec nameko run --config "$CONFIG" "services.$command.service"' in text
    assert 'CONFIG="${SKILLQUEST_CONFIG:-/app/deploy/config.yml}"' in text


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell")
def test_the_entry_point_is_valid_shell_and_refuses_to_guess():
    subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=True)
    assert subprocess.run(["sh", str(ENTRYPOINT)], capture_output=True).returncode == 64
    bad = subprocess.run(["sh", str(ENTRYPOINT), "healthcheck", "nope"], capture_output=True)
    assert bad.returncode == 64


# --- compose -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE_DIR / "compose.yml")


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    schema = json.loads((COMPOSE_DIR / "schema" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return schema


def default_of(value: str) -> str:
    """A compose value with each `${VAR:-default}` replaced by its default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_the_compose_schema_is_the_official_one_with_its_licence():
    schema_dir = COMPOSE_DIR / "schema"
    assert "Apache License" in (schema_dir / "LICENSE").read_text()
    schema = json.loads((schema_dir / "compose-spec.json").read_text())
    assert schema["$id"] == "compose_spec.json"
    assert schema["title"] == "Compose Specification"


def test_the_compose_file_follows_the_compose_specification(compose, compose_schema):
    errors = sorted(
        jsonschema.Draft7Validator(compose_schema).iter_errors(compose), key=lambda e: e.path
    )
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_compose_schema_catches_mistakes(compose, compose_schema):
    broken = json.loads(json.dumps(compose))
    broken["services"]["points"]["helthcheck"] = broken["services"]["points"].pop("healthcheck")
    assert not jsonschema.Draft7Validator(compose_schema).is_valid(broken)


def test_every_service_runs_from_the_image_with_health_checks_and_restarts(compose):
    services = compose["services"]
    for name in SERVICES:
        service = services[name]
        assert service["command"] == [name]
        assert service["image"].startswith("${SKILLQUEST_IMAGE:-")
        assert service["build"]["context"] == "../.."
        assert service["restart"] == "unless-stopped"
        assert service["healthcheck"]["test"][:3] == ["CMD", "skillquest-entrypoint", "healthcheck"]
        assert service["read_only"] is True
        assert service["deploy"]["resources"]["limits"]
    for name in ("kafka", "mongodb", "prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"], name
        assert services[name]["restart"] == "unless-stopped", name
    for job in ("kafka-topics", "mongodb-init"):
        assert services[job]["restart"] == "no", job


def test_every_consumer_starts_after_the_topics_and_the_replica_set(compose):
    for name in SERVICES:
        if name == "gateway":
            continue
        depends = compose["services"][name]["depends_on"]
        assert depends["kafka-topics"]["condition"] == "service_completed_successfully"
        assert depends["mongodb-init"]["condition"] == "service_completed_successfully"
    gateway = compose["services"]["gateway"]["depends_on"]
    assert {name for name in gateway} == set(SERVICES) - {"gateway"}


def test_kafka_runs_kraft_with_a_listener_the_services_can_reach(compose):
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in key for key in env)
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    for name in [*SERVICES, "kafka-topics"]:
        bootstrap = compose["services"][name]["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
        assert bootstrap == "kafka:9092", name


def test_the_topic_job_makes_every_topic_with_the_same_partitions(compose):
    job = compose["services"]["kafka-topics"]
    assert job["command"] == ["topics"]
    assert default_of(job["environment"]["TOPIC_PARTITIONS"]) == str(DEFAULT_PARTITIONS)
    assert job["depends_on"]["kafka"]["condition"] == "service_healthy"
    # The job itself is tested in test_deploy_topics.py: ALL_TOPICS, unlimited retention.


def test_mongodb_is_a_replica_set_initiated_by_the_compose_itself(compose):
    mongodb = compose["services"]["mongodb"]
    command = mongodb["command"]
    replica_set = command[command.index("--replSet") + 1]
    script = (COMPOSE_DIR / "mongodb" / "init-replica-set.js").read_text()
    assert f'_id: "{replica_set}"' in script
    assert 'host: "mongodb:27017"' in script
    assert "NotYetInitialized" in script, "a second run must find the set initiated"
    init = compose["services"]["mongodb-init"]
    assert init["depends_on"]["mongodb"]["condition"] == "service_healthy"
    for name in SERVICES:
        if name == "gateway":
            continue
        uri = compose["services"][name]["environment"]["MONGODB_URI"]
        assert uri == f"mongodb://mongodb:27017/?replicaSet={replica_set}", name


def config_url_variables() -> dict[str, str]:
    """{service: the variable deploy/config.yml reads its URL from}."""
    config = (DEPLOY / "config.yml").read_text()
    return dict(re.findall(r"^\s+([a-z]+): \$\{([A-Z]+_URL):", config, re.M))


def test_the_gateway_finds_every_service_and_reads_its_secret_from_a_file(compose):
    gateway = compose["services"]["gateway"]
    env = gateway["environment"]
    variables = config_url_variables()
    assert set(variables) == set(SERVICES) - {"gateway"}
    for service, variable in variables.items():
        assert env[variable] == f"http://{service}:{PORTS[service]}"
    assert "JWT_SECRET" not in env
    assert env["JWT_SECRET_FILE"] == "/run/secrets/jwt_secret"
    assert gateway["secrets"] == ["jwt_secret"]
    assert compose["secrets"]["jwt_secret"]["file"].startswith("./secrets/")
    assert "secrets/" in (COMPOSE_DIR / ".gitignore").read_text().split()
    assert default_of(gateway["ports"][0]) == "127.0.0.1:8080:8080"


def test_every_file_the_compose_mounts_exists(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source}"
            else:
                assert source in compose["volumes"], f"{name}: {source}"


def test_grafana_is_provisioned_from_deploy_grafana(compose):
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["../grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = load(DEPLOY / "grafana" / "provisioning" / "dashboards" / "skillquest.yml")
    assert mounts["../grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    datasource = load(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    host, port = datasource["datasources"][0]["url"].split("//")[1].split(":")
    assert host in compose["services"]
    assert compose["services"][host]["ports"][0].endswith(f":{port}")


# --- Prometheus ----------------------------------------------------------------------------


def scrape_jobs(path: Path) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in load(path)["scrape_configs"]}


def test_compose_prometheus_keeps_the_job_names_of_deploy_prometheus(compose):
    local = scrape_jobs(DEPLOY / "prometheus" / "prometheus.yml")
    ours = scrape_jobs(COMPOSE_DIR / "prometheus.yml")
    assert set(ours) == set(local)
    for name in SERVICES:
        (sd,) = ours[name]["dns_sd_configs"]
        assert sd["names"] == [name] and sd["port"] == PORTS[name]
    mounts = dict(v.split(":")[:2] for v in compose["services"]["prometheus"]["volumes"])
    assert mounts["./prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["../prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    assert load(COMPOSE_DIR / "prometheus.yml")["rule_files"] == ["alerts.yml"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_compose_prometheus_config(tmp_path):
    shutil.copy(COMPOSE_DIR / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    result = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_kubernetes_scrape_config_names_jobs_after_the_services():
    (job,) = load(K8S_DIR / "prometheus-scrape.yml")["scrape_configs"]
    relabel = {
        rule["target_label"]: rule for rule in job["relabel_configs"] if "target_label" in rule
    }
    assert relabel["job"]["source_labels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == [
        load(K8S_DIR / "kustomization.yaml")["namespace"]
    ]


# --- Kubernetes ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    return load(K8S_DIR / "kustomization.yaml")


@pytest.fixture(scope="module")
def resources(kustomization) -> list[dict[str, Any]]:
    return [doc for name in kustomization["resources"] for doc in load_all(K8S_DIR / name)]


def by_kind(resources: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in resources if doc["kind"] == kind}


def test_the_kustomization_lists_every_manifest(kustomization):
    listed = set(kustomization["resources"])
    for name in listed:
        assert (K8S_DIR / name).is_file(), name
    manifests = {path.name for path in K8S_DIR.glob("*.yaml")}
    assert manifests - listed == {"kustomization.yaml", "secret.example.yaml"}


K8S_MANIFESTS = sorted(path for path in K8S_DIR.glob("*.yaml") if path.name != "kustomization.yaml")


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", K8S_MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_follows_the_kubernetes_schemas(path, version):
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate (a dev dependency) is not installed"
    )
    for document in load_all(path):
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise AssertionError(f"{path.name} {document['kind']}: {error.message}") from None


def test_the_kubernetes_schemas_catch_mistakes():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    deployment = load_all(K8S_DIR / "points.yaml")[0]
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_a_deployment_per_service_with_probes_resources_and_scrape_annotations(
    resources, kustomization
):
    deployments = by_kind(resources, "Deployment")
    assert set(deployments) == set(SERVICES)
    (image,) = kustomization["images"]
    for name, deployment in deployments.items():
        container = container_of(deployment)
        port = PORTS[name]
        assert container["image"] == image["name"]
        assert container["args"] == [name]
        assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port)
        assert annotations["prometheus.io/path"] == "/metrics"
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == name  # the Prometheus job


def test_every_pod_keeps_serving_a_moment_after_it_leaves_the_endpoints(resources):
    """A preStop pause shorter than the grace period: the proxies learn of a terminating
    pod a few seconds after it leaves the Service's endpoints, and SIGTERM comes after the
    pause (the services stop at once on it: runtime/signal_wakeup.py)."""
    for name, deployment in by_kind(resources, "Deployment").items():
        pre_stop = container_of(deployment)["lifecycle"]["preStop"]
        assert pre_stop["exec"]["command"][0] == "sleep", name
        pause = float(pre_stop["exec"]["command"][1])
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert 0 < pause <= grace / 3, name  # most of the grace period is left for the stop


def test_config_comes_from_the_config_map_and_secrets_from_the_secret(resources):
    (config_map,) = by_kind(resources, "ConfigMap").values()
    secret = load(K8S_DIR / "secret.example.yaml")
    assert secret["kind"] == "Secret"
    data = config_map["data"]
    assert "MONGODB_URI" not in data and "JWT_SECRET" not in data
    for name, deployment in by_kind(resources, "Deployment").items():
        container = container_of(deployment)
        assert container["envFrom"] == [{"configMapRef": {"name": config_map["metadata"]["name"]}}]
        secret_refs = {
            item["name"]: item["valueFrom"]["secretKeyRef"]
            for item in container["env"]
            if "valueFrom" in item
        }
        wanted = {"JWT_SECRET"} if name == "gateway" else {"MONGODB_URI"}
        assert set(secret_refs) == wanted, name
        for ref in secret_refs.values():
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret["stringData"]
    assert "replicaSet=" in secret["stringData"]["MONGODB_URI"]
    for service, variable in config_url_variables().items():
        assert data[variable] == f"http://{service}:{PORTS[service]}"


def test_services_and_disruption_budgets_select_their_pods(resources):
    deployments = by_kind(resources, "Deployment")
    services = by_kind(resources, "Service")
    budgets = by_kind(resources, "PodDisruptionBudget")
    assert set(services) == set(budgets) == set(SERVICES)
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = services[name]["spec"]["selector"]
        assert selector.items() <= labels.items()
        assert services[name]["spec"]["ports"][0]["port"] == PORTS[name]
        assert budgets[name]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_autoscalers_for_the_consumers_and_the_gateway_within_the_partitions(resources):
    autoscalers = by_kind(resources, "HorizontalPodAutoscaler")
    assert set(autoscalers) == {*CONSUMERS, "gateway"}
    (config_map,) = by_kind(resources, "ConfigMap").values()
    partitions = int(config_map["data"]["TOPIC_PARTITIONS"])
    assert partitions == DEFAULT_PARTITIONS
    deployments = by_kind(resources, "Deployment")
    for name, autoscaler in autoscalers.items():
        spec = autoscaler["spec"]
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
        assert deployments[name]["spec"]["replicas"] >= spec["minReplicas"]
        if name in CONSUMERS:
            # A consumer group uses at most one replica per partition.
            assert spec["maxReplicas"] <= partitions, name
    for name, deployment in deployments.items():
        if name in CONSUMERS:
            assert deployment["spec"]["replicas"] <= partitions


def test_the_topic_job_runs_the_image_s_topic_command(resources, kustomization):
    (job,) = by_kind(resources, "Job").values()
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == kustomization["images"][0]["name"]
    assert container["args"] == ["topics"]
    (config_map,) = by_kind(resources, "ConfigMap").values()
    assert container["envFrom"] == [{"configMapRef": {"name": config_map["metadata"]["name"]}}]
    assert "KAFKA_BOOTSTRAP_SERVERS" in config_map["data"]
