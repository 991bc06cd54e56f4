"""Pure parts of crossrank.adapters.nodes: spec parsing, JDK choice, unzip, CLI args."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from crossrank.adapters import nodes
from crossrank.adapters.cli import nodes as cli_nodes
from crossrank.adapters.nodes import (
    EngineSpec,
    EngineStartError,
    artifacts,
    config,
    find_java,
    java_major,
    runner,
)
from crossrank.adapters.processes import ProcessStartError
from crossrank.reranker.errors import ConfigurationError, CrossrankError


def test_parse_spec() -> None:
    spec = EngineSpec.parse("elasticsearch:8.19.21")
    assert spec == EngineSpec("elasticsearch", "8.19.21")
    assert (spec.kind, spec.version, spec.major) == ("elasticsearch", "8.19.21", 8)
    assert str(spec) == "elasticsearch:8.19.21"
    assert spec.zip_name == "elasticsearch-8.19.21.zip"
    assert (
        spec.artifact == "org.elasticsearch.distribution.integ-test-zip:elasticsearch:8.19.21:zip"
    )
    assert spec.env_prefix == "ES"
    os3 = EngineSpec.parse(" OpenSearch:3.6.0 ")
    assert os3 == EngineSpec("opensearch", "3.6.0")
    assert os3.artifact == "org.opensearch.distribution.integ-test-zip:opensearch:3.6.0:zip"
    assert os3.env_prefix == "OPENSEARCH"
    assert EngineSpec.parse("es:9.3.2") == EngineSpec("elasticsearch", "9.3.2")
    assert EngineSpec.parse("os:2.19.6") == EngineSpec("opensearch", "2.19.6")


def test_parse_list() -> None:
    assert EngineSpec.parse_list("elasticsearch:9.3.2, opensearch:2.19.6,") == [
        EngineSpec("elasticsearch", "9.3.2"),
        EngineSpec("opensearch", "2.19.6"),
    ]
    assert EngineSpec.parse_list("") == []


@pytest.mark.parametrize(
    "text", ["elasticsearch", "elasticsearch:", "solr:9.0.0", ":1.2.3", "opensearch:latest"]
)
def test_parse_spec_rejects(text: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        EngineSpec.parse(text)
    assert isinstance(info.value, ValueError)  # still caught as one


def test_engine_errors_have_the_one_root() -> None:
    assert issubclass(EngineStartError, ProcessStartError)
    assert issubclass(EngineStartError, CrossrankError)
    assert issubclass(EngineStartError, RuntimeError)  # callers may catch the builtin


@pytest.mark.parametrize(
    ("spec", "java"),
    [
        ("elasticsearch:8.19.21", 17),
        ("elasticsearch:9.3.2", 21),
        ("opensearch:2.19.6", 11),
        ("opensearch:3.6.0", 21),
    ],
)
def test_min_java(spec: str, java: int) -> None:
    assert EngineSpec.parse(spec).min_java == java


@pytest.mark.parametrize(
    ("text", "major"),
    [
        ('IMPLEMENTOR="Eclipse Adoptium"\nJAVA_VERSION="25.0.3"\n', 25),
        ('JAVA_VERSION="17.0.15"\nJAVA_VERSION_DATE="2025-04-15"\n', 17),
        ('JAVA_VERSION="1.8.0_292"\n', 8),
        ('JAVA_VERSION="21"\n', 21),
        ('JAVA_VERSION_DATE="2025-04-15"\n', None),
        ("", None),
    ],
)
def test_java_major(text: str, major: int | None) -> None:
    assert java_major(text) == major


def _fake_jdk(base: Path, name: str, version: str, *, executable: bool = True) -> Path:
    home = base / name
    (home / "bin").mkdir(parents=True)
    (home / "release").write_text(f'JAVA_VERSION="{version}"\nOS_NAME="Linux"\n')
    java = home / "bin" / "java"
    java.write_text("#!/bin/sh\n")
    java.chmod(0o755 if executable else 0o644)
    return home


def test_find_java_picks_lowest_sufficient(tmp_path: Path) -> None:
    jvm = tmp_path / "jvm"
    j17 = _fake_jdk(jvm, "java-17-openjdk-amd64", "17.0.15")
    (jvm / "java-1.17.0-openjdk-amd64").symlink_to(j17)  # Debian alias: same JDK
    j25 = _fake_jdk(jvm, "temurin-25-jdk-amd64", "25.0.3")
    _fake_jdk(jvm, "broken-21", "21.0.1", executable=False)
    (jvm / "no-release").mkdir()
    assert find_java(17, search_dirs=[jvm], java_home="").resolve() == j17.resolve()
    assert find_java(11, search_dirs=[jvm], java_home="").resolve() == j17.resolve()
    assert find_java(21, search_dirs=[jvm], java_home="") == j25
    with pytest.raises(EngineStartError, match=r"Java >= 26.*Java 17.*Java 25"):
        find_java(26, search_dirs=[jvm], java_home="")


def test_find_java_considers_java_home(tmp_path: Path) -> None:
    jvm = tmp_path / "jvm"
    _fake_jdk(jvm, "java-17", "17.0.1")
    j21 = _fake_jdk(tmp_path / "opt", "jdk-21", "21.0.2")
    assert find_java(21, search_dirs=[jvm], java_home=str(j21)) == j21
    assert find_java(17, search_dirs=[jvm], java_home=str(j21)) == jvm / "java-17"
    # $JAVA_HOME is the default java_home.
    jvm_empty = tmp_path / "empty"
    jvm_empty.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAVA_HOME", str(j21))
        assert find_java(17, search_dirs=[jvm_empty]) == j21
        mp.delenv("JAVA_HOME")
        with pytest.raises(EngineStartError, match="found: none"):
            find_java(17, search_dirs=[jvm_empty, tmp_path / "missing"])


def test_fetch_uses_cache_without_mvn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = EngineSpec("opensearch", "2.19.6")
    cached = tmp_path / spec.zip_name
    with zipfile.ZipFile(cached, "w") as zf:
        zf.writestr("opensearch-2.19.6/README", "x")
    monkeypatch.setattr(artifacts.shutil, "which", lambda _name: None)
    assert nodes.fetch(spec, tmp_path) == cached
    monkeypatch.setenv("CROSSRANK_ENGINE_CACHE", str(tmp_path))
    assert nodes.fetch(spec) == cached
    with pytest.raises(EngineStartError, match="mvn"):
        nodes.fetch(EngineSpec("opensearch", "9.9.9"), tmp_path)


def test_unzip_keeps_modes(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("top/bin/run")
        info.external_attr = (stat.S_IFREG | 0o755) << 16
        zf.writestr(info, "#!/bin/sh\n")
        info = zipfile.ZipInfo("top/config/x.yml")
        info.external_attr = (stat.S_IFREG | 0o640) << 16
        zf.writestr(info, "a: 1\n")
    runner._unzip(archive, tmp_path / "out")
    assert stat.S_IMODE((tmp_path / "out/top/bin/run").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out/top/config/x.yml").stat().st_mode) == 0o640


def test_node_url_before_start() -> None:
    node = nodes.EngineNode("opensearch:2.19.6")
    assert not node.running
    assert node.version == "2.19.6"
    with pytest.raises(EngineStartError, match="not started"):
        _ = node.url
    node.stop()  # no-op


def test_cli_rejects_bad_spec(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_nodes.main(["fetch", "solr:1.0.0"])
    assert exc.value.code == 2
    assert "unknown engine kind" in capsys.readouterr().err


# --------------------------------------------------------------------------- clusters


def _settings(spec: str, **kwargs: object) -> dict[str, str]:
    return config.node_settings(
        EngineSpec.parse(spec),
        http_port=9200,
        transport_port=9300,
        data=Path("/d"),
        logs=Path("/l"),
        **kwargs,  # type: ignore[arg-type]
    )


def test_single_node_settings() -> None:
    es = _settings("elasticsearch:9.3.2", extra={"http.port": "9999", "x.y": "z"})
    assert es == {
        "http.port": "9999",  # extra wins
        "transport.port": "9300",
        "network.host": "127.0.0.1",
        "path.data": "/d",
        "path.logs": "/l",
        "cluster.routing.allocation.disk.threshold_enabled": "false",
        "discovery.type": "single-node",
        "xpack.security.enabled": "false",
        "x.y": "z",
    }
    os2 = _settings("opensearch:2.19.6")
    assert os2["discovery.type"] == "single-node"
    assert not any(key.startswith(("xpack.", "cluster.initial", "discovery.seed")) for key in os2)


@pytest.mark.parametrize(
    ("spec", "bootstrap"),
    [
        ("elasticsearch:9.3.2", "cluster.initial_master_nodes"),
        ("elasticsearch:8.19.21", "cluster.initial_master_nodes"),
        ("opensearch:2.19.6", "cluster.initial_cluster_manager_nodes"),
        ("opensearch:3.6.0", "cluster.initial_cluster_manager_nodes"),
        ("opensearch:1.3.20", "cluster.initial_master_nodes"),  # before the rename
    ],
)
def test_cluster_member_settings(spec: str, bootstrap: str) -> None:
    plan = config.ClusterPlan.of((9301, 9302, 9303), name="c1")
    assert plan.node_names == ("c1-0", "c1-1", "c1-2") and plan.size == 3
    members = [_settings(spec, cluster=plan, member=i) for i in range(3)]
    for i, settings in enumerate(members):
        assert "discovery.type" not in settings
        assert settings["cluster.name"] == "c1"
        assert settings["node.name"] == f"c1-{i}"
        assert settings["transport.port"] == str(9301 + i)  # the plan's, not the argument
        assert settings["http.port"] == "9200"
        assert settings["discovery.seed_hosts"] == "127.0.0.1:9301,127.0.0.1:9302,127.0.0.1:9303"
        assert settings[bootstrap] == "c1-0,c1-1,c1-2"
        others = {"cluster.initial_master_nodes", "cluster.initial_cluster_manager_nodes"}
        assert not (others - {bootstrap}) & set(settings)
        assert ("xpack.security.enabled" in settings) == spec.startswith("elasticsearch")
    with pytest.raises(ConfigurationError, match="no node 3"):
        plan.member_settings(EngineSpec.parse(spec), 3)


def test_cluster_plan_names_are_unique_and_checked() -> None:
    a, b = config.ClusterPlan.of((1, 2)), config.ClusterPlan.of((3, 4))
    assert a.name != b.name and a.name.startswith("crossrank-")
    for bad in [((), ()), (("a", "b"), (1,)), (("a", "a"), (1, 2)), (("a", "b"), (1, 1))]:
        with pytest.raises(ConfigurationError):
            config.ClusterPlan("c", *bad)


def test_node_env() -> None:
    base = {"PATH": "/bin", "ES_PATH_CONF": "/etc/es", "OPENSEARCH_PATH_CONF": "/etc/os"}
    env = config.node_env(
        EngineSpec.parse("elasticsearch:9.3.2"),
        java=Path("/jdk"),
        heap="384m",
        tmp=Path("/t"),
        home=Path("/h"),
        base=base,
    )
    assert env["ES_JAVA_OPTS"] == "-Xms384m -Xmx384m"
    assert env["ES_JAVA_HOME"] == env["JAVA_HOME"] == "/jdk"
    assert (env["ES_TMPDIR"], env["TMPDIR"], env["HOME"], env["PATH"]) == ("/t", "/t", "/h", "/bin")
    assert "ES_PATH_CONF" not in env and env["OPENSEARCH_PATH_CONF"] == "/etc/os"
    assert base["ES_PATH_CONF"] == "/etc/es"  # the caller's mapping is left alone
    env = config.node_env(
        EngineSpec.parse("opensearch:2.19.6"),
        java=Path("/jdk"),
        heap="1g",
        tmp=Path("/t"),
        home=Path("/h"),
        base=base,
    )
    assert env["OPENSEARCH_JAVA_OPTS"] == "-Xms1g -Xmx1g" and "OPENSEARCH_PATH_CONF" not in env


def test_cluster_before_start() -> None:
    cluster = nodes.EngineCluster("opensearch:2.19.6", nodes=3, name="t")
    assert [n.member for n in cluster.nodes] == [0, 1, 2]
    assert all(n.cluster is cluster.plan for n in cluster.nodes)
    assert cluster.plan.node_names == ("t-0", "t-1", "t-2") and cluster.name == "t"
    assert len(set(cluster.plan.transport_ports)) == 3
    assert cluster.live == []
    with pytest.raises(EngineStartError, match="no node"):
        _ = cluster.url
    with pytest.raises(EngineStartError, match="not running"):
        cluster.kill(0)
    cluster.stop()  # no-op
    with pytest.raises(ConfigurationError, match="at least one node"):
        nodes.EngineCluster("opensearch:2.19.6", nodes=0)
    with pytest.raises(ConfigurationError, match="no node 5"):
        nodes.EngineNode("opensearch:2.19.6", cluster=cluster.plan, member=5)


def test_cli_rejects_a_cluster_of_no_node(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_nodes.main(["run", "opensearch:2.19.6", "--nodes", "0"])
    assert exc.value.code == 2
    assert "--nodes must be at least 1" in capsys.readouterr().err
