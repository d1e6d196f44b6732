"""docker-compose.yml: PostgreSQL plus the API, migrations before the API, secrets from the
environment with no defaults, health checks, and commands that exist in the CLI the tests run.
(CI also runs `docker-compose config`; this test needs nothing installed.)"""

from pathlib import Path

import yaml
from typer.main import get_command

from cli.main import app as cli_app

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _cli_paths() -> set[tuple[str, ...]]:
    group = get_command(cli_app)
    paths = set()
    for name, cmd in group.commands.items():
        paths.add((name,))
        for sub in getattr(cmd, "commands", {}):
            paths.add((name, sub))
    return paths


def test_services_and_order():
    s = COMPOSE["services"]
    assert {"db", "init", "api", "worker"} <= set(s)
    assert s["db"]["image"].startswith("postgres:")
    assert s["db"]["healthcheck"]["test"]
    assert s["api"]["healthcheck"]["test"]
    assert s["api"]["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert s["api"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert s["init"]["depends_on"]["db"]["condition"] == "service_healthy"


def test_commands_are_real_cli_commands():
    paths = _cli_paths()
    for name in ("init", "api", "worker"):
        argv = COMPOSE["services"][name]["command"]
        assert argv[0] == "nhr"
        words = tuple(w for w in argv[1:] if not w.startswith("-"))[:2]
        assert words[:1] in paths or words in paths, f"{name}: {argv} is not an nhr command"
    assert ("init",) in paths and ("serve",) in paths and ("worker",) in paths


def test_secrets_have_no_defaults():
    raw = (ROOT / "docker-compose.yml").read_text()
    assert "${NHR_DB_PASSWORD:?" in raw
    env = COMPOSE["services"]["api"]["environment"]
    assert env["NHR_ENV"] == "production"
    # the password reaches libpq as PGPASSWORD, never inside the URL (no escaping to get wrong)
    assert "${NHR_DB_PASSWORD:?" in env["PGPASSWORD"]
    assert "NHR_DB_PASSWORD" not in env["NHR_DATABASE_URL"] and ":" not in env["NHR_DATABASE_URL"].split("@")[0].split("//")[1]
    assert "password" not in raw.lower().replace("nhr_db_password", "").replace("postgres_password", "").replace("pgpassword", "")


def test_image_is_built_once_and_services_restart():
    s = COMPOSE["services"]
    built = [name for name, svc in s.items() if "build" in svc]
    assert built == ["init"], "one service builds the image; the others reuse it by name"
    assert s["api"]["image"] == s["init"]["image"]
    assert s["api"]["restart"] == "unless-stopped" and s["db"]["restart"] == "unless-stopped"
    assert s["worker"]["image"] == s["init"]["image"] and s["worker"]["restart"] == "unless-stopped"


def test_worker_runs_beside_the_api():
    """The sealer and refresher run as their own process (issue 17), after the migrations, with the
    API's settings (production: the API's in-process worker is off, so without this nothing seals)."""
    s = COMPOSE["services"]
    assert s["worker"]["command"] == ["nhr", "worker"]
    assert s["worker"]["environment"] == s["api"]["environment"]
    assert s["worker"]["environment"]["NHR_ENV"] == "production"
    assert "NHR_IN_PROCESS_WORKER" not in s["api"]["environment"]  # the production default: off
    assert s["worker"]["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert s["worker"]["volumes"] == s["api"]["volumes"]  # the same keys (the audit signing key)
