"""bench.faults, bench.autoscale and bench.multinode deploy one app after another in one Ray.
Between apps Serve must be gone (bench.deploy.shutdown_serve: the next serve.start would
join a controller that is left, on its old port), and that holds when serve.start itself
fails: its controller stays up. Ray is not started here: deploy is replaced by one that
fails, as serve.start did on a loaded machine."""

from __future__ import annotations

import pytest

from bench import autoscale, deploy, faults, multinode


class StartFailed(Exception):
    pass


@pytest.fixture
def shutdowns(monkeypatch) -> list[str]:
    calls: list[str] = []

    def failing_deploy(_config, name: str, **_kw) -> str:
        calls.append(f"deploy {name}")
        raise StartFailed(name)

    monkeypatch.setattr(deploy, "deploy", failing_deploy)
    monkeypatch.setattr(deploy, "shutdown_serve", lambda: calls.append("shutdown_serve"))
    return calls


def test_autoscale_shuts_serve_down_when_its_start_fails(shutdowns) -> None:
    args = autoscale.parse_args([])
    with pytest.raises(StartFailed):
        autoscale.run_policy("default", args)
    assert shutdowns == ["deploy autoscale-default", "shutdown_serve"]


def test_faults_shuts_serve_down_when_its_start_fails(shutdowns, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(deploy, "start_cluster", lambda *a, **kw: object())
    with pytest.raises(StartFailed):
        faults.main(["--faults", "model_server", "--json", str(tmp_path / "r.json")])
    assert shutdowns[-1] == "shutdown_serve" and len(shutdowns) == 2


def test_multinode_shuts_serve_down_when_its_start_fails(shutdowns) -> None:
    with pytest.raises(StartFailed):
        multinode.check_node_loss(object(), clients=1, duration=1.0)
    with pytest.raises(StartFailed):
        multinode._deploy_and_place("placed", {}, want_replicas=1)
    assert shutdowns == ["deploy " + faults.app_args("node")[0], "shutdown_serve",
                         "deploy placed", "shutdown_serve"]


def test_each_app_is_shut_down_with_shutdown_serve_not_plain_serve_shutdown(
        shutdowns, monkeypatch, tmp_path) -> None:
    """A run that goes well also ends each app with shutdown_serve (waits until no Serve
    actor is left), not serve.shutdown() (gives up after 30 s, replicas may still drain)."""
    monkeypatch.setattr(deploy, "deploy", lambda _c, name, **_kw:
                        shutdowns.append(f"deploy {name}") or "http://127.0.0.1:1")
    monkeypatch.setattr(deploy, "start_cluster", lambda *a, **kw: object())

    async def under_load(*_a, **_kw) -> dict:
        return {"ok": True}

    monkeypatch.setattr(faults, "under_load", under_load)
    monkeypatch.setattr(faults, "ok", lambda r: True)
    monkeypatch.setattr(faults, "line", lambda f, r: f)
    faults.main(["--faults", "model_server,ingress", "--json", str(tmp_path / "r.json")])
    assert shutdowns.count("shutdown_serve") == 2
    assert shutdowns[1::2] == ["shutdown_serve", "shutdown_serve"]
