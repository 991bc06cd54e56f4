"""docker/docker-compose.yml agrees with the CLI, the Dockerfile and the tested engines.

Docker is not available here, so the file is checked, not run: every crossrank command in it
parses with the real CLI parsers, ports and URLs line up, images match the tested engines.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from crossrank.adapters.cli import COMMANDS, command_parser

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
CROSSRANK = {n: s for n, s in SERVICES.items() if s.get("image", "").startswith("crossrank:")}
ENGINE_PORT = 9200


def expand(arg: str) -> str:
    """Compose's ``${VAR:-default}`` with the default taken."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", arg)


def options(service: dict[str, Any]) -> dict[str, str]:
    command = [expand(a) for a in service["command"]]
    return {
        command[i]: command[i + 1]
        for i in range(1, len(command) - 1)
        if command[i].startswith("--")
    }


def test_expected_services() -> None:
    assert {"elasticsearch", "opensearch", "scorer", "proxy-es", "proxy-os", "loader"} <= set(
        SERVICES
    )
    assert SERVICES["scorer-gpu"]["profiles"] == ["gpu"]
    gpu = SERVICES["scorer-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]


@pytest.mark.parametrize("name", sorted(CROSSRANK))
def test_commands_parse_with_the_real_cli(name: str) -> None:
    command = [expand(a) for a in CROSSRANK[name]["command"]]
    assert command[0] in COMMANDS
    command_parser(command[0]).parse_args(command[1:])  # exits on an unknown option


@pytest.mark.parametrize("name", sorted(CROSSRANK))
def test_ports_and_urls_line_up(name: str) -> None:
    service = CROSSRANK[name]
    opts = options(service)
    if "--port" in opts:
        published = [p.split(":")[-1] for p in service.get("ports", [])]
        assert published == [opts["--port"]]
        assert opts.get("--host") == "0.0.0.0"  # reachable from other containers
    for flag in ("--upstream", "--scorer-url", "--engine-url"):
        if flag in opts:
            url = urlparse(opts[flag])
            assert url.hostname in SERVICES, f"{name}: {flag} names no service"
            target = SERVICES[url.hostname]
            port = options(target).get("--port") if target in CROSSRANK.values() else None
            assert url.port == int(port or ENGINE_PORT)
            assert url.hostname in service.get("depends_on", {})


def test_secrets_stay_out_of_command_lines() -> None:
    """Keys reach the containers through the environment: a flag would show in ``ps``."""
    for name, service in CROSSRANK.items():
        command = " ".join(service["command"])
        assert "KEY" not in command and "TOKEN" not in command, name
        if service["command"][0] == "serve":
            assert "CROSSRANK_API_KEY" in service.get("environment", {}), name


def test_images_are_the_tested_engine_versions() -> None:
    makefile = (ROOT / "Makefile").read_text()
    tested = set(re.findall(r"(elasticsearch|opensearch):(\d+\.\d+\.\d+)", makefile))
    es_tag = SERVICES["elasticsearch"]["image"].rsplit(":", 1)[1]
    os_tag = SERVICES["opensearch"]["image"].rsplit(":", 1)[1]
    assert ("elasticsearch", es_tag) in tested and ("opensearch", os_tag) in tested


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """docker/Dockerfile as stages, each a list of (INSTRUCTION, arguments), lines joined."""
    text = (ROOT / "docker" / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    stages: list[list[tuple[str, str]]] = []
    for line in joined.splitlines():
        if not line.strip():
            continue
        instruction, _, args = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        assert stages, f"instruction before FROM: {line}"
        stages[-1].append((instruction.upper(), " ".join(args.split())))
    return stages


def test_dockerfile_installs_what_the_commands_need() -> None:
    final = dockerfile_stages()[-1]
    assert ("ENTRYPOINT", '["crossrank"]') in final
    installs = [args for ins, args in final if ins == "RUN" and "pip install" in args]
    assert any("[all]" in args for args in installs), installs
    assert (ROOT / "pyproject.toml").read_text().count('crossrank = "crossrank.adapters.cli:main"')


def test_dockerfile_installs_the_built_wheel_not_the_source_tree() -> None:
    """The image runs the artifact CI tests (make wheel-check): a wheel, built in a first stage.

    The final stage installs ``<the wheel>[all]`` and takes nothing from the build context: no
    ``COPY adapters``/``reranker``, no ``pip install .`` or ``-e``, nothing copied into
    site-packages, no PYTHONPATH, so a module that the wheel lacks cannot hide in the image.
    """
    stages = dockerfile_stages()
    assert len(stages) >= 2, "a stage that builds the wheel, then the final one"
    *builders, final = stages
    names = set()
    for stage in builders:
        words = stage[0][1].split()  # FROM image [AS name]
        names |= {words[-1]} if len(words) == 3 and words[1].upper() == "AS" else set()
    builds = [args for stage in builders for ins, args in stage if ins == "RUN"]
    assert any("-m build" in args and "--wheel" in args for args in builds), builds

    copies = [args for ins, args in final if ins in ("COPY", "ADD")]
    assert copies, "the final stage copies the wheel from the build stage"
    for args in copies:
        source_stage = re.match(r"--from=(\S+)\s", args)
        assert source_stage and source_stage.group(1) in names, f"COPY from the context: {args}"
        assert "adapters" not in args and "reranker" not in args, args
        assert "site-packages" not in args, args
    for stage in stages:
        for ins, args in stage:
            if ins in ("COPY", "ADD"):
                assert "site-packages" not in args, args
            if ins == "ENV":
                assert "PYTHONPATH" not in args, args

    installs = [args for ins, args in final if ins == "RUN" and "pip install" in args]
    assert installs
    for args in installs:
        assert ".whl" in args, f"installs no wheel: {args}"
        assert not re.search(r"pip install[^&;|]*\s(-e|--editable)\s", args), args
        source_tree = r"pip install[^&;|]*\s[\"']?\.(\[[^]]*\])?[\"']?([\s&;|]|$)"
        assert not re.search(source_tree, args), f"installs the source tree: {args}"
