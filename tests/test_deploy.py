"""Deployment files: the compose file validates and matches the code, the settings docs are
complete and generated, the Dockerfiles are consistent with the repository.

``docker-compose config`` (Debian's docker-compose 1.29; ``scripts/test.sh`` installs it when it
can) validates without a Docker engine. Where it is missing, that one test is skipped and the
structural checks below still run on the parsed YAML.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ttalkkac import settings_doc
from ttalkkac.settings import Settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
GPU_SERVICES = {"api", "worker"}
CPU_SERVICES = {"api-cpu", "worker-cpu"}
APP_SERVICES = GPU_SERVICES | CPU_SERVICES


# What a user must add to the copied .env: the compose file refuses to start without them.
REQUIRED_ENV = "API_KEYS=key-one,key-two\nFLOWER_BASIC_AUTH=admin:flower-pass\n"


def _compose_dir(tmp_path: Path, *, required: bool = True) -> Path:
    """The compose project as a user has it after `cp .env.example .env` and setting the two
    required values (``required=False``: before setting them)."""
    for name in ("docker-compose.yml", ".env.example", ".dockerignore"):
        shutil.copy(REPO / name, tmp_path / name)
    example = (REPO / ".env.example").read_text()
    (tmp_path / ".env").write_text(example + (REQUIRED_ENV if required else ""))
    shutil.copytree(REPO / "docker", tmp_path / "docker")
    return tmp_path


def _config(binary: str, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, *args, "config"], cwd=project, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


# --- docker-compose config -----------------------------------------------------------------


def test_docker_compose_config_validates(tmp_path: Path) -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    project = _compose_dir(tmp_path)
    run = subprocess.run(
        [binary, "--profile", "cpu", "config"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    config = yaml.safe_load(run.stdout)
    services = config["services"]
    assert set(services) == {"redis", "postgres", "flower"} | APP_SERVICES
    # Interpolation resolved to the documented defaults.
    api = services["api"]
    assert api["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert api["environment"]["DATABASE_URL"] == (
        "postgresql+psycopg://ttalkkac:ttalkkac@postgres:5432/ttalkkac"
    )
    assert api["build"]["args"]["VLLM_IMAGE"] == "vllm/vllm-openai:v0.32.0"
    device = api["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["device_ids"] == ["0"]
    assert {p["target"] for p in api["ports"]} == {8000}
    # Secure defaults: the key reaches both APIs, Flower's login its command, its port loopback.
    for name in ("api", "api-cpu"):
        assert services[name]["environment"]["API_KEYS"] == "key-one,key-two", name
    flower = services["flower"]
    assert "--basic-auth=admin:flower-pass" in flower["command"]
    # docker-compose 1.29 prints a port with a host address in the short form.
    assert [str(p) for p in flower["ports"]] == ["127.0.0.1:5555:5555/tcp"]

    # A value set in .env reaches the containers' substitution.
    (project / ".env").write_text(REQUIRED_ENV + "POSTGRES_PASSWORD=s3cret\nWORKER_GPU=1\n")
    run = subprocess.run(
        [binary, "config"], cwd=project, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    services = yaml.safe_load(run.stdout)["services"]
    assert ":s3cret@postgres" in services["worker"]["environment"]["DATABASE_URL"]
    worker_dev = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert worker_dev["device_ids"] == ["1"]


@pytest.mark.parametrize("missing", ["API_KEYS", "FLOWER_BASIC_AUTH"])
def test_docker_compose_refuses_to_start_without_a_key_or_flower_login(
    tmp_path: Path, missing: str
) -> None:
    """An unedited .env (every setting commented out) is refused, naming what to set."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    project = _compose_dir(tmp_path, required=False)
    others = [line for line in REQUIRED_ENV.splitlines() if not line.startswith(f"{missing}=")]
    (project / ".env").write_text("\n".join(others) + "\n")
    run = _config(binary, project, "--profile", "cpu")
    assert run.returncode != 0
    assert f"set {missing} in .env" in run.stderr
    # Setting it is enough.
    (project / ".env").write_text(REQUIRED_ENV)
    assert _config(binary, project, "--profile", "cpu").returncode == 0


def test_docker_compose_config_rejects_a_broken_file(tmp_path: Path) -> None:
    """The validation above can fail: a reference to an undeclared volume is an error."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    project = _compose_dir(tmp_path)
    text = (project / "docker-compose.yml").read_text()
    (project / "docker-compose.yml").write_text(text.replace("- jobs:/data/jobs", "- nope:/x"))
    run = subprocess.run(
        [binary, "config", "-q"], cwd=project, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0
    assert "nope" in run.stderr


# --- structure (always runs) ----------------------------------------------------------------


def test_services_and_profiles(compose: dict) -> None:
    services = compose["services"]
    assert {"redis", "postgres", "flower"} | APP_SERVICES <= set(services)
    for name in GPU_SERVICES | {"redis", "postgres", "flower"}:
        assert "profiles" not in services[name], name  # `docker compose up` starts them
    for name in CPU_SERVICES:
        assert services[name]["profiles"] == ["cpu"]


def test_gpu_reservations_only_on_gpu_services(compose: dict) -> None:
    for name, service in compose["services"].items():
        devices = (
            service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
        )
        if name in GPU_SERVICES:
            assert devices and devices[0]["driver"] == "nvidia", name
            assert devices[0]["capabilities"] == ["gpu"]
        else:
            assert not devices, name


def test_secure_defaults(compose: dict) -> None:
    """The APIs need a key (no default: `:?`), Flower a login and a loopback-only port."""
    services = compose["services"]
    for name in ("api", "api-cpu"):
        keys = services[name]["environment"]["API_KEYS"]
        assert keys.startswith("${API_KEYS:?"), (name, keys)
        # It listens on every interface of its container: the key check is what protects it.
        assert services[name]["command"][-3:] == ["0.0.0.0", "--port", "8000"]
    flower = services["flower"]
    auth = [arg for arg in flower["command"] if arg.startswith("--basic-auth=")]
    assert auth and auth[0].startswith("--basic-auth=${FLOWER_BASIC_AUTH:?"), flower["command"]
    assert flower["ports"] == ["${FLOWER_HOST_ADDRESS:-127.0.0.1}:${FLOWER_HOST_PORT:-5555}:5555"]


def test_depends_on_waits_for_healthy_services(compose: dict) -> None:
    services = compose["services"]
    for name in APP_SERVICES:
        deps = services[name]["depends_on"]
        assert deps == {
            "redis": {"condition": "service_healthy"},
            "postgres": {"condition": "service_healthy"},
        }
    for name, service in services.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            if cond.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits on {dep} without a check"
    for name in ("redis", "postgres", "flower", *APP_SERVICES):
        assert services[name]["healthcheck"]["test"], name


def test_api_and_worker_share_data_volumes(compose: dict) -> None:
    """Adapters written by the worker must be at the same path in the API's container."""
    services = compose["services"]
    declared = set(compose["volumes"])
    mounts = {name: sorted(services[name]["volumes"]) for name in APP_SERVICES}
    assert len({tuple(m) for m in mounts.values()}) == 1, mounts
    for mount in mounts["api"]:
        assert mount.split(":")[0] in declared
    targets = {m.split(":")[1] for m in mounts["api"]}
    assert {"/data", "/data/jobs", "/cache/huggingface"} <= targets
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["DATA_DIR"] == "/data"
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["REDIS_URL"] == "redis://redis:6379/0"
    # every named volume used anywhere is declared
    for service in services.values():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, source


def test_compose_env_names_are_settings_or_documented(compose: dict) -> None:
    """Variables the compose file passes to the app are real settings (no typos)."""
    fields = {d.env for d in settings_doc.setting_docs()}
    for name in APP_SERVICES:
        for key in compose["services"][name]["environment"]:
            assert key in fields or key == "HF_HOME", key
    example = (REPO / ".env.example").read_text()
    for var in set(re.findall(r"\$\{([A-Z_]+)", COMPOSE.read_text())):
        assert re.search(rf"^# {var}=", example, re.M), f"{var} missing from .env.example"


def test_commands_are_cli_commands(compose: dict) -> None:
    """`ttalkkac api` and `ttalkkac worker` (other lanes' commands) exist in the CLI."""
    from typer.main import get_command

    from ttalkkac.cli.main import app

    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    for name in APP_SERVICES:
        argv = compose["services"][name]["command"]
        assert argv[0] == "ttalkkac"
        assert argv[1] in commands, f"{name}: ttalkkac {argv[1]} is not a CLI command"
    assert "up" in commands


# --- Dockerfiles ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["api", "worker", "cpu"])
def test_dockerfile(name: str) -> None:
    text = (REPO / "docker" / f"{name}.Dockerfile").read_text()
    assert re.search(r"^USER ttalkkac$", text, re.M), "runs as root"
    assert re.search(r"^HEALTHCHECK ", text, re.M)
    for source in re.findall(r"^COPY (?!--from)(\S+) ", text, re.M):
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    # Every package the wheel needs is copied in (setuptools include list).
    for package in ("ttalkkac", "app", "worker"):
        assert re.search(rf"^COPY {package} {package}$", text, re.M), package
    if name != "api":
        assert text.count("FROM ") >= 2, "multi-stage"
    if name == "api":
        assert "vllm/vllm-openai:v0.32.0" in text
    if name == "worker":
        assert "torch==2.13.0" in text and "[cpu]" not in text and "[gpu]" not in text
    if name == "cpu":
        assert '".[cpu]"' in text and "torch==2.13.0+cpu" in text


def test_dockerfile_pins_match_pyproject() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    vllm_pin = re.search(r'"vllm==([\d.]+)"', pyproject).group(1)  # type: ignore[union-attr]
    assert f"vllm/vllm-openai:v{vllm_pin}" in (REPO / "docker" / "api.Dockerfile").read_text()
    assert f"vllm/vllm-openai:v{vllm_pin}" in COMPOSE.read_text()
    torch_pin = re.search(r'"torch==([\d.]+)"', pyproject).group(1)  # type: ignore[union-attr]
    assert f"torch=={torch_pin}" in (REPO / "docker" / "worker.Dockerfile").read_text()


def test_dockerignore_keeps_what_the_images_copy() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in ("ttalkkac", "app", "worker", "pyproject.toml", "README.md", "scripts"):
        assert needed not in ignored
    assert {".venv", ".git", ".env", "var"} <= ignored


# --- settings docs --------------------------------------------------------------------------


def test_every_setting_is_in_env_example() -> None:
    example = (REPO / ".env.example").read_text()
    for name in Settings.model_fields:
        assert re.search(rf"^# {name.upper()}=", example, re.M), f"{name.upper()} missing"


def test_env_example_block_is_generated() -> None:
    text = (REPO / ".env.example").read_text()
    assert settings_doc.env_example_with_block(text) == text, (
        "stale: run python -m ttalkkac.settings_doc --write"
    )


def test_readme_settings_table_is_generated() -> None:
    readme = (REPO / "README.md").read_text()
    assert settings_doc.readme_with_table(readme) == readme, (
        "stale: run python -m ttalkkac.settings_doc --write"
    )
    for name in Settings.model_fields:
        assert f"| `{name.upper()}` |" in readme


def test_env_example_defaults_parse_as_settings(tmp_path: Path) -> None:
    """Uncommenting every line of .env.example gives valid settings equal to the defaults."""
    lines = [
        line[2:]
        for line in (REPO / ".env.example").read_text().splitlines()
        if re.match(r"^# [A-Z_]+=", line)
    ]
    env = {k: v for k, v in (line.split("=", 1) for line in lines) if v != ""}
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(f"{k}={v}" for k, v in env.items()) + "\n")
    from_file = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert from_file == Settings()


def test_settings_doc_check_detects_drift(tmp_path: Path) -> None:
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    shutil.copy(REPO / ".env.example", tmp_path / ".env.example")
    assert settings_doc.main(["--check", "--root", str(tmp_path)]) == 0
    stale = (tmp_path / "README.md").read_text().replace("| `DATA_DIR` |", "| `DATA_DIRX` |")
    (tmp_path / "README.md").write_text(stale)
    assert settings_doc.main(["--check", "--root", str(tmp_path)]) == 1
    assert settings_doc.main(["--write", "--root", str(tmp_path)]) == 0
    assert settings_doc.main(["--check", "--root", str(tmp_path)]) == 0
