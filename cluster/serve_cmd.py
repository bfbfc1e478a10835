"""`tandem serve`: start Ray locally, run the app of a Serve YAML (ray_configs/local.yaml by
default), print the URL and a curl line, and serve until Ctrl-C. The same YAML works with
`serve run ray_configs/local.yaml`."""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cluster import cpu_placement, stream_guard
from cluster.config import TandemConfig, load_config

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "ray_configs" / "local.yaml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tandem serve", description=__doc__)
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                   help="a Serve config YAML whose app imports cluster.app:build_app "
                        "(default: ray_configs/local.yaml)")
    p.add_argument("--app", default=None, help="which application of the YAML (default: first)")
    p.add_argument("--host", default=None, help="default: the YAML's http_options, or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: the YAML's, or 8000")
    p.add_argument("--address", default=None,
                   help="join a running Ray cluster (default: start Ray locally)")
    return p.parse_args(argv)


def read_yaml(path: Path, app_name: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the application entry, the YAML's http_options)."""
    doc = yaml.safe_load(path.read_text()) or {}
    apps = doc.get("applications") or []
    if not apps:
        raise ValueError(f"{path}: no applications")
    chosen = [a for a in apps if app_name in (None, a.get("name"))]
    if not chosen:
        raise ValueError(f"{path}: no application named {app_name!r}")
    return chosen[0], doc.get("http_options") or {}


def curl_line(url: str, config: TandemConfig) -> str:
    body = {"model": config.model.name, "prompt": "def parse_args(", "max_tokens": 32,
            "temperature": 0}
    parts = ["curl", "-s", f"{url}/v1/completions", "-H", "Content-Type: application/json"]
    if config.api_keys:
        parts[-2:-2] = ["-H", "Authorization: Bearer $TANDEM_API_KEY"]
    line = " ".join(shlex.quote(p) for p in parts)
    line = line.replace("'Authorization: Bearer $TANDEM_API_KEY'",
                        '"Authorization: Bearer $TANDEM_API_KEY"')
    return f"{line} -d {shlex.quote(json.dumps(body))}"


def start(app: dict[str, Any], config: TandemConfig, host: str, port: int,
          address: str | None) -> None:
    cpu_placement.ray_start_env()
    import ray
    from ray import serve

    from cluster.app import make_app

    ray.init(address=address, include_dashboard=False, ignore_reinit_error=True,
             runtime_env=app.get("runtime_env") or None)
    serve.start(http_options={"host": host, "port": port},  # streams end with an error event
                controller_options=stream_guard.controller_options(config))
    serve.run(make_app(config), name=app.get("name", "tandem"),
              route_prefix=app.get("route_prefix", "/"))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        app, http = read_yaml(args.config, args.app)
        config = load_config(app.get("args"))
    except (OSError, ValueError, ValidationError, yaml.YAMLError) as err:
        print(f"tandem serve: {err}", file=sys.stderr)
        sys.exit(2)
    host = args.host or http.get("host", "127.0.0.1")
    port = args.port or http.get("port", 8000)
    start(app, config, host, port, args.address)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}"
    print(f"\ntandem: serving {config.model.name!r} at {url}/v1  (Ctrl-C to stop)\n"
          f"  metrics: {url}/metrics   health: {url}/health\n  try:\n"
          f"  {curl_line(url, config)}\n", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        stop(app.get("name", "tandem"), joined=args.address is not None)


def stop(app_name: str, joined: bool) -> None:
    """On a cluster we joined, remove only our application. A local Ray we started goes
    down whole: serve.shutdown() would first drain replicas that Ctrl-C has already
    signalled (the whole process group gets it), which took ~9 s here."""
    import ray
    from ray import serve

    print("tandem: stopping", file=sys.stderr, flush=True)
    if joined:
        serve.delete(app_name)
    ray.shutdown()
