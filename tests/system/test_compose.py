"""The container deployment: ``compose.yaml``, ``Dockerfile`` and ``.dockerignore``.

No Docker engine is needed. ``compose.yaml`` is read twice when possible:

* always, by the small reader below (PyYAML is not a dependency of the project): it understands
  the YAML subset ``compose.yaml`` keeps to and refuses anything else, so it cannot silently
  misread the file; ``${VAR:-default}`` is interpolated as Compose does;
* when the ``docker compose`` CLI plugin is installed, by ``docker compose config --format json``,
  the authoritative reading (interpolation, defaults, validation against the Compose schema).
  Both readings must give the same stack, and the same checks run on each.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

SERVICES = {"kafka", "postgres", "topics", "keys", "ledger"}


# -- a reader for the YAML subset compose.yaml keeps to -------------------------------------------


class SubsetError(ValueError):
    """compose.yaml uses YAML this reader does not accept (see the header of compose.yaml)."""


_KEY = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_.\-]*):(?:[ ]+(.*))?$")
_YAML11_BOOL_WORDS = {"yes", "no", "on", "off", "y", "n"}


def _strip_comment(line: str, lineno: int) -> str:
    quote: str | None = None
    escaped = False
    for i, ch in enumerate(line):
        if quote == '"':
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quote = None
        elif quote == "'":
            if ch == "'":
                quote = None
        elif ch in "\"'" and (i == 0 or line[i - 1] in " [,:-"):
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    if quote:
        raise SubsetError(f"line {lineno}: unterminated quoted string")
    return line.rstrip()


def _double_quoted(text: str, lineno: int) -> tuple[str, str]:
    """The string value of a leading double-quoted scalar, and what follows it."""
    i, escaped = 1, False
    while i < len(text):
        ch = text[i]
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            try:
                return json.loads(text[: i + 1]), text[i + 1 :]
            except json.JSONDecodeError as error:
                raise SubsetError(f"line {lineno}: escape outside the subset in {text!r}: {error}") from None
        i += 1
    raise SubsetError(f"line {lineno}: unterminated string {text!r}")


def _single_quoted(text: str, lineno: int) -> tuple[str, str]:
    i = 1
    while i < len(text):
        if text[i] == "'":
            if text[i + 1 : i + 2] == "'":
                i += 2
                continue
            return text[1:i].replace("''", "'"), text[i + 1 :]
        i += 1
    raise SubsetError(f"line {lineno}: unterminated string {text!r}")


def _plain(text: str, lineno: int) -> Any:
    if not text or text[0] in "&*!|>{}%@`,[]#" or text.startswith(("- ", "? ", ": ")):
        raise SubsetError(f"line {lineno}: {text!r} is outside the subset (anchor, tag, block or flow map)")
    if ": " in text or " #" in text:
        raise SubsetError(f"line {lineno}: quote {text!r}")
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "~"):
        return None
    if low in _YAML11_BOOL_WORDS:
        raise SubsetError(f"line {lineno}: {text!r} is a boolean to YAML 1.1 readers: quote it")
    if re.fullmatch(r"[-+]?(0|[1-9][0-9]*)", text):
        return int(text)
    if re.fullmatch(
        r"[-+]?[0-9][0-9_]*(:[0-9]+)+|[-+]?0[0-9_]+|[-+]?(\.[0-9]+|[0-9]+\.[0-9]*)([eE][-+]?[0-9]+)?", text
    ):
        raise SubsetError(
            f"line {lineno}: {text!r} is a number (sexagesimal, octal or float) to YAML 1.1: quote it"
        )
    return text


def _scalar(text: str, lineno: int) -> Any:
    text = text.strip()
    if text.startswith("["):
        return _flow_list(text, lineno)
    if text.startswith('"'):
        value, rest = _double_quoted(text, lineno)
    elif text.startswith("'"):
        value, rest = _single_quoted(text, lineno)
    else:
        return _plain(text, lineno)
    if rest.strip():
        raise SubsetError(f"line {lineno}: text after a quoted string: {rest!r}")
    return value


def _flow_list(text: str, lineno: int) -> list[Any]:
    if not text.endswith("]"):
        raise SubsetError(f"line {lineno}: a [flow list] must close on its line")
    rest = text[1:-1].strip()
    items: list[Any] = []
    while rest:
        if rest[0] in "\"'":
            value, rest = (_double_quoted if rest[0] == '"' else _single_quoted)(rest, lineno)
            items.append(value)
        else:
            item, _, rest = rest.partition(",")
            if any(c in item for c in "[]{}"):
                raise SubsetError(f"line {lineno}: nested flow collections are outside the subset")
            items.append(_plain(item.strip(), lineno))
            rest = rest.strip()
            continue
        rest = rest.strip()
        if rest.startswith(","):
            rest = rest[1:].strip()
        elif rest:
            raise SubsetError(f"line {lineno}: expected ',' in flow list, got {rest!r}")
    return items


def load_compose_subset(text: str) -> Any:
    """Parse the YAML subset of compose.yaml: block maps and lists, one-line flow lists, scalars."""
    lines: list[tuple[int, str, int]] = []  # (indent, text, line number)
    for lineno, raw in enumerate(text.splitlines(), 1):
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise SubsetError(f"line {lineno}: tab in indentation")
        content = _strip_comment(raw, lineno)
        if not content.strip():
            continue
        if content.strip() in ("---", "...") or content.lstrip().startswith("%"):
            raise SubsetError(f"line {lineno}: one document only, no directives")
        indent = len(content) - len(content.lstrip(" "))
        lines.append((indent, content.strip(), lineno))

    def is_item(text: str) -> bool:
        return text == "-" or text.startswith("- ")

    def node(i: int, indent: int) -> tuple[Any, int]:
        return (sequence if is_item(lines[i][1]) else mapping)(i, indent)

    def mapping(i: int, indent: int) -> tuple[dict[str, Any], int]:
        result: dict[str, Any] = {}
        while i < len(lines) and lines[i][0] == indent:
            _, text, lineno = lines[i]
            match = _KEY.match(text)
            if not match:
                raise SubsetError(f"line {lineno}: expected 'key: value', got {text!r}")
            key, rest = match.group(1), match.group(2)
            if key in result:
                raise SubsetError(f"line {lineno}: duplicate key {key!r}")
            i += 1
            if rest is not None and rest.strip():
                result[key] = _scalar(rest, lineno)
            elif i < len(lines) and lines[i][0] > indent:
                result[key], i = node(i, lines[i][0])
            elif i < len(lines) and lines[i][0] == indent and is_item(lines[i][1]):
                result[key], i = sequence(i, indent)
            else:
                result[key] = None
        if i < len(lines) and lines[i][0] > indent:
            raise SubsetError(f"line {lines[i][2]}: unexpected indentation")
        return result, i

    def sequence(i: int, indent: int) -> tuple[list[Any], int]:
        items: list[Any] = []
        while i < len(lines) and lines[i][0] == indent and is_item(lines[i][1]):
            _, text, lineno = lines[i]
            rest = text[1:].strip()
            i += 1
            if not rest:
                if i < len(lines) and lines[i][0] > indent:
                    value, i = node(i, lines[i][0])
                    items.append(value)
                else:
                    items.append(None)
            elif _KEY.match(rest) and not rest.startswith(("'", '"')):
                raise SubsetError(f"line {lineno}: '- key: value' list items are outside the subset")
            else:
                items.append(_scalar(rest, lineno))
        if i < len(lines) and lines[i][0] > indent:
            raise SubsetError(f"line {lines[i][2]}: unexpected indentation")
        return items, i

    if not lines:
        return None
    if lines[0][0] != 0:
        raise SubsetError(f"line {lines[0][2]}: the document must start at column 0")
    value, i = node(0, 0)
    if i != len(lines):
        raise SubsetError(f"line {lines[i][2]}: unexpected text {lines[i][1]!r}")
    return value


_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        name = match.group(2) or match.group(5)
        op, arg = match.group(3), match.group(4) or ""
        present = name in env
        val = env.get(name, "")
        if op in (":-", "-"):
            use_default = not val if op == ":-" else not present
            return arg if use_default else val
        if op in (":?", "?"):
            if (not val) if op == ":?" else (not present):
                raise AssertionError(f"compose.yaml requires ${name}: {arg}")
            return val
        if op in (":+", "+"):
            return arg if (val if op == ":+" else present) else ""
        return val

    return _VAR.sub(substitute, value)


def compose_variables() -> set[str]:
    return {m.group(2) or m.group(5) for m in _VAR.finditer(COMPOSE.read_text()) if not m.group(1)}


# -- one view of the stack, whichever reader produced it ----------------------------------------


def normalize(doc: dict[str, Any]) -> dict[str, Any]:
    """The facts the checks need, in one shape for the file as written and for Compose's JSON."""
    services: dict[str, Any] = {}
    for name, svc in (doc.get("services") or {}).items():
        svc = svc or {}
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
        env = {
            k: (str(v).lower() if isinstance(v, bool) else ("" if v is None else str(v)))
            for k, v in env.items()
        }
        depends = svc.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: {} for d in depends}
        build = svc.get("build")
        if isinstance(build, str):
            build = {"context": build}
        if build is not None:
            build = {
                "context": (ROOT / build.get("context", ".")).resolve(),
                "dockerfile": build.get("dockerfile") or "Dockerfile",
            }
        command = svc.get("command")
        if isinstance(command, str):
            command = shlex.split(command)
        ports = []
        for port in svc.get("ports") or []:
            if isinstance(port, dict):
                ports.append((port.get("host_ip", ""), str(port.get("published", "")), str(port["target"])))
            else:
                parts = str(port).split(":")
                ports.append(tuple(parts) if len(parts) == 3 else ("", *parts))
        volumes = []
        for volume in svc.get("volumes") or []:
            if isinstance(volume, dict):
                volumes.append((volume.get("type", "volume"), volume.get("source"), volume["target"]))
            else:
                source, target = str(volume).split(":")[:2]
                kind = "bind" if source.startswith((".", "/", "~")) else "volume"
                volumes.append((kind, source, target))
        test = (svc.get("healthcheck") or {}).get("test")
        services[name] = {
            "image": svc.get("image"),
            "build": build,
            "command": command,
            "environment": env,
            "depends_on": {d: (c or {}).get("condition", "service_started") for d, c in depends.items()},
            "restart": svc.get("restart"),
            "stop_grace_period": svc.get("stop_grace_period"),
            "ports": ports,
            "volumes": volumes,
            "healthcheck": shlex.split(test) if isinstance(test, str) else test,
        }
    return {"name": doc.get("name"), "services": services, "volumes": set(doc.get("volumes") or {})}


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """KAFKA_LISTENERS-style 'NAME://host:port,...' as {NAME: (host, port)}."""
    out = {}
    for item in value.split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def check_stack(stack: dict[str, Any], env: dict[str, str]) -> None:
    """What the deployment must be, given the variables the user set (``env``)."""
    services = stack["services"]
    assert set(services) == SERVICES
    assert stack["name"] == "caseledger"  # volume names caseledger_*, whatever the checkout is called

    # Kafka: one KRaft node, broker and controller.
    kafka = services["kafka"]
    image, _, tag = kafka["image"].rpartition(":")
    assert image == "apache/kafka"
    assert tuple(int(p) for p in tag.split(".")[:2]) >= (3, 9), "KRaft without ZooKeeper, as configured"
    kenv = kafka["environment"]
    assert set(kenv["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = kenv["KAFKA_NODE_ID"]
    controller = kenv["KAFKA_CONTROLLER_LISTENER_NAMES"]
    bound = listeners(kenv["KAFKA_LISTENERS"])
    advertised = listeners(kenv["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(item.split(":") for item in kenv["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert kenv["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node_id}@kafka:{bound[controller][1]}"
    assert controller not in advertised
    assert set(bound) == set(protocols) and set(advertised) <= set(bound)
    for name in advertised:
        assert advertised[name][1] == bound[name][1] or name == "EXTERNAL", name
    internal = kenv["KAFKA_INTER_BROKER_LISTENER_NAME"]
    assert advertised[internal] == ("kafka", bound[internal][1])
    kafka_internal = f"kafka:{bound[internal][1]}"
    # The host listener: advertised as localhost on the port published on the host.
    host_port = env.get("KAFKA_HOST_PORT") or "29092"
    assert advertised["EXTERNAL"] == ("localhost", int(host_port))
    assert ("127.0.0.1", host_port, str(bound["EXTERNAL"][1])) in kafka["ports"]
    for setting in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert kenv[setting] == "1", setting
    assert kenv["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert ("volume", "kafka-data", kenv["KAFKA_LOG_DIRS"]) in kafka["volumes"]
    probe = " ".join(kafka["healthcheck"])
    assert (
        f"/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server localhost:{bound[internal][1]}"
        in probe
    )

    # PostgreSQL 16 with a named volume.
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16"
    penv = postgres["environment"]
    user = env.get("POSTGRES_USER") or "caseledger"
    password = env.get("POSTGRES_PASSWORD") or "caseledger"
    dbname = env.get("POSTGRES_DB") or "caseledger"
    assert (penv["POSTGRES_USER"], penv["POSTGRES_PASSWORD"], penv["POSTGRES_DB"]) == (user, password, dbname)
    assert ("volume", "postgres-data", "/var/lib/postgresql/data") in postgres["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"])
    assert [p[2] for p in postgres["ports"]] == ["5432"]

    assert {"kafka-data", "postgres-data"} <= stack["volumes"]
    for name, svc in services.items():  # nothing listens beyond this machine by default
        assert all(p[0] == "127.0.0.1" for p in svc["ports"]), name
        assert svc["healthcheck"] is None or svc["healthcheck"][0] in ("CMD", "CMD-SHELL"), name

    # The ledger's own services, built from this repository's Dockerfile.
    topics, ledger = services["topics"], services["ledger"]
    for svc in (topics, ledger):
        assert svc["build"] == {"context": ROOT, "dockerfile": "Dockerfile"}
        assert svc["environment"]["CASELEDGER_KAFKA_BOOTSTRAP"] == kafka_internal
        assert svc["environment"]["CASELEDGER_INTAKE_TOPIC"] == "caseledger.intake"
        assert svc["environment"]["CASELEDGER_EVENTS_TOPIC"] == "caseledger.events"
        assert svc["environment"]["CASELEDGER_OUTCOMES_TOPIC"] == "caseledger.outcomes"  # the verdicts (issue 25)
        assert svc["environment"]["CASELEDGER_KAFKA_REPLICATION"] == "1"  # one broker
    for var in ("CASELEDGER_INTAKE_PARTITIONS", "CASELEDGER_EVENTS_PARTITIONS"):
        assert topics["environment"][var] == ledger["environment"][var] == "6", var

    assert topics["command"] == ["topics", "create"]
    assert topics["depends_on"] == {"kafka": "service_healthy"}
    assert topics["restart"] == "no"

    assert ledger["command"] == ["run"]
    keys = services["keys"]  # the key-encryption key: made once, in its own volume, read-only to the ledger
    assert keys["command"] == ["keys", "new-kek", "--out", "/keys/kek", "--if-missing"]
    assert ("volume", "ledger-keys", "/keys") in keys["volumes"] and keys["restart"] == "no"
    assert ledger["environment"]["CASELEDGER_KEK_FILE"] == "/keys/kek"
    assert "ledger-keys" in stack["volumes"]
    assert ledger["depends_on"] == {
        "keys": "service_completed_successfully",
        "postgres": "service_healthy",
        "kafka": "service_healthy",
        "topics": "service_completed_successfully",
    }
    assert ledger["restart"] == "unless-stopped"
    assert ledger["stop_grace_period"] == "30s"
    for var in ("CASELEDGER_KAFKA_CONSUMER", "CASELEDGER_KAFKA_PRODUCER"):  # the image has librdkafka
        assert ledger["environment"][var] == "confluent", var
    url = urlsplit(ledger["environment"]["CASELEDGER_DATABASE"])
    assert (url.scheme, url.hostname, url.port) == ("postgresql", "postgres", 5432)
    assert (url.username, url.password, url.path) == (user, password, f"/{dbname}")


OVERRIDES = {"POSTGRES_PASSWORD": "s3cret", "KAFKA_HOST_PORT": "39092"}


# -- compose.yaml as written ----------------------------------------------------------------------


def test_compose_file_as_written() -> None:
    doc = load_compose_subset(COMPOSE.read_text())
    assert "version" not in doc, "the Compose specification has no version key"
    check_stack(normalize(interpolate(doc, {})), {})


def test_compose_file_with_overrides() -> None:
    doc = load_compose_subset(COMPOSE.read_text())
    check_stack(normalize(interpolate(doc, OVERRIDES)), OVERRIDES)


def test_every_variable_has_a_default() -> None:
    """`docker compose config` must work with nothing set: each ${VAR} has a :- default."""
    text = COMPOSE.read_text()
    for match in _VAR.finditer(text):
        if match.group(1):
            continue
        assert match.group(3) == ":-", f"{match.group(0)} in compose.yaml needs a default: ${{VAR:-default}}"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("restart: no\n", "boolean"),
        ("ports:\n  - 29092:29092\n", "sexagesimal"),
        ("a: &x 1\n", "outside the subset"),
        ("a: |\n  b\n", "outside the subset"),
        ("a:\n  - b: c\n", "outside the subset"),
        ("a: 1\na: 2\n", "duplicate"),
        ("a:\n    b: 1\n  c: 2\n", "unexpected indentation"),
    ],
)
def test_subset_reader_refuses_what_it_cannot_read_safely(text: str, problem: str) -> None:
    with pytest.raises(SubsetError, match=problem):
        load_compose_subset(text)


def test_subset_reader_reads_what_compose_yaml_uses() -> None:
    text = (
        "name: x  # comment\n"
        "services:\n"
        "  s:\n"
        "    command: [\"a\", \"b # not a comment\", 'c''d']\n"
        "    env:\n"
        '      A: "1"\n'
        "      B: 2\n"
        "      C: plain://host:1,x\n"
        "    list:\n"
        "    - one\n"
        '    - "$${X}"\n'
        "volumes:\n"
        "  v:\n"
    )
    assert load_compose_subset(text) == {
        "name": "x",
        "services": {
            "s": {
                "command": ["a", "b # not a comment", "c'd"],
                "env": {"A": "1", "B": 2, "C": "plain://host:1,x"},
                "list": ["one", "$${X}"],
            }
        },
        "volumes": {"v": None},
    }


def test_subset_reader_agrees_with_pyyaml() -> None:
    import yaml  # the test extra installs it: a missing PyYAML must fail the run, not skip
    assert load_compose_subset(COMPOSE.read_text()) == yaml.safe_load(COMPOSE.read_text())


# -- compose.yaml as Docker Compose reads it -------------------------------------------------------


@functools.cache
def compose_cli_problem() -> str | None:
    """Why `docker compose config --format json` cannot run here, or None when it can."""
    if not shutil.which("docker"):
        return "the docker CLI is not installed"
    try:
        version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=60)
        if version.returncode != 0:
            detail = (version.stderr or version.stdout).strip().splitlines()
            return f"the docker CLI has no compose plugin ({detail[0] if detail else version.returncode})"
        help_text = subprocess.run(
            ["docker", "compose", "config", "--help"], capture_output=True, text=True, timeout=60
        ).stdout
    except subprocess.TimeoutExpired:
        return "docker compose did not answer within 60 s"
    if "--format" not in help_text:
        return f"this docker compose has no `config --format` ({version.stdout.strip()})"
    return None


def compose_config(tmp_path: Path, overrides: dict[str, str]) -> dict[str, Any]:
    problem = compose_cli_problem()
    if problem:
        pytest.skip(f"{problem}; compose.yaml is still checked by the subset reader")
    env = {
        k: v for k, v in os.environ.items() if k not in compose_variables() and not k.startswith("COMPOSE_")
    }
    env.update(overrides)
    empty = tmp_path / "empty.env"  # ignore a developer's .env beside compose.yaml
    empty.write_text("")
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "--project-directory", str(ROOT), "--env-file", str(empty),
         "config", "--format", "json"],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, f"docker compose config failed:\n{result.stderr}"
    return unescape_dollars(json.loads(result.stdout))


def unescape_dollars(value: Any) -> Any:
    """Compose's output writes a literal $ as $$ (so that it can be read again): undo that."""
    if isinstance(value, dict):
        return {k: unescape_dollars(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unescape_dollars(v) for v in value]
    return value.replace("$$", "$") if isinstance(value, str) else value


@pytest.mark.parametrize("overrides", [{}, OVERRIDES], ids=["defaults", "overrides"])
def test_docker_compose_config(tmp_path: Path, overrides: dict[str, str]) -> None:
    rendered = compose_config(tmp_path, overrides)
    stack = normalize(rendered)
    check_stack(stack, overrides)
    # The subset reader and Compose read the same stack.
    assert normalize(interpolate(load_compose_subset(COMPOSE.read_text()), overrides)) == stack


# -- Dockerfile and .dockerignore ------------------------------------------------------------------


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def top_level_packages() -> set[str]:
    """The top folders of the checkout the packages are built from (honouring ``package-dir``)."""
    tool = pyproject()["tool"]["setuptools"]
    mapping: dict[str, str] = tool.get("package-dir", {})
    folders = set()
    for name in tool["packages"]:
        prefix = max((p for p in mapping if name == p or name.startswith(p + ".")), key=len, default=None)
        folder = mapping[prefix] + name[len(prefix):].replace(".", "/") if prefix else name.replace(".", "/")
        folders.add(folder.split("/")[0])
    return folders


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    out = []
    for line in logical:
        instruction, _, args = line.strip().partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


def copied_sources() -> set[str]:
    """Paths the Dockerfile COPYs from the build context (not from other stages)."""
    sources: set[str] = set()
    for instruction, args in dockerfile_instructions():
        if instruction not in ("COPY", "ADD"):
            continue
        words = shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue
        paths = [w for w in words if not w.startswith("--")]
        sources |= {str(PurePosixPath(p)) for p in paths[:-1]}
    return sources


def test_dockerfile_copies_every_package() -> None:
    sources = copied_sources()
    packages = top_level_packages()
    assert packages, "pyproject.toml lists no packages"
    missing = packages - sources
    assert not missing, f"Dockerfile does not COPY {sorted(missing)}: the image would lack them"
    for package in packages:
        assert (ROOT / package).is_dir(), package
    # pip builds the wheel from pyproject.toml, which names its readme: both must be there.
    assert "pyproject.toml" in sources
    assert pyproject()["project"]["readme"] in sources


def test_dockerfile_runs_the_installed_package_as_non_root() -> None:
    instructions = dockerfile_instructions()
    stages = [args for ins, args in instructions if ins == "FROM"]
    assert stages and all(s.split()[0] == "python:3.11-slim" for s in stages)
    final = max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM")
    final_stage = instructions[final:]
    users = [args for ins, args in final_stage if ins == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    runs = " ".join(args for ins, args in instructions if ins == "RUN")
    assert re.search(r"pip install --no-cache-dir '\.\[confluent\]'(\s|$)", runs), \
        "install the package (a wheel, not -e) with the confluent-kafka clients compose.yaml selects"
    assert "confluent" in pyproject()["project"]["optional-dependencies"]
    assert ("ENTRYPOINT", '["caseledger"]') in final_stage
    assert ("CMD", '["run"]') in final_stage
    assert pyproject()["project"]["scripts"]["caseledger"]


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus **) as a regex over slash paths."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + "[" + pattern[i + 1 : end].replace("^", "\\^", 1) + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str) -> bool:
    """Whether the build context leaves ``path`` out: the last matching pattern (or a parent's) wins."""
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            patterns.append((negate, _dockerignore_regex(str(PurePosixPath(line.lstrip("!").strip("/"))))))
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negate, regex in patterns:
        if any(regex.fullmatch(c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_what_the_build_needs() -> None:
    needed = {"pyproject.toml", pyproject()["project"]["readme"]}
    for package in top_level_packages():
        needed |= {
            str(p.relative_to(ROOT))
            for p in (ROOT / package).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".sqlite")
        }
    assert any(p.endswith(".avsc") for p in needed) and any(p.endswith(".toml") for p in needed)
    dropped = sorted(p for p in needed if dockerignored(p))
    assert not dropped, f".dockerignore leaves out files the image needs: {dropped}"


def test_dockerignore_leaves_out_local_state() -> None:
    for path in (
        ".git/HEAD", ".venv/bin/python", "tests/test_compose.py", "build/lib/ledger/domain.py", ".env",
        "caseledger.sqlite", "cli/x.sqlite", "ledger/x.sqlite-wal", "ledger/__pycache__/domain.cpython-311.pyc",
        ".pytest_cache/v/cache", ".hypothesis/examples/x", "caseledger.egg-info/PKG-INFO",
    ):  # fmt: skip
        assert dockerignored(path), path
