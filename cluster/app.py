"""The builder Serve's YAML points at (`import_path: cluster.app:build_app`): config in,
application out. The deployments are plain classes; their Serve options come from the config
(placement-group bundles derived from tp). The model-server deployment is named ModelServer
in both layouts, so handles (batch jobs) find it by that name."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from cluster.config import TandemConfig, load_config
from cluster.ingress import OpenAIIngress
from cluster.model_server import EngineFactory, ModelServer
from cluster.openai_server import OpenAIServer


def build_app(args: dict[str, Any]) -> Application:
    """Serve's entry point: the YAML's `args` (validated once, here) -> the application."""
    return make_app(load_config(args))


def make_app(config: TandemConfig, engine_factory: EngineFactory | None = None) -> Application:
    """The OpenAI API and the model server, both sized by the config: one deployment
    (layout single) or the ingress bound to the model server (split). engine_factory
    replaces the checkpoint-loading engine (tests inject small engines)."""
    options = config.model_server_options()
    if config.layout == "single" and config.engine_core_kind(engine_factory is not None) == \
            "process":
        options = _user_code_on_main_loop(options)
    if config.layout == "single":
        server = serve.deployment(OpenAIServer, name="ModelServer").options(**options)
        return server.bind(config, engine_factory)
    server = serve.deployment(ModelServer, name="ModelServer").options(**options)
    ingress = serve.deployment(OpenAIIngress, name="OpenAIIngress").options(
        **config.ingress.to_serve())
    return ingress.bind(server.bind(config, engine_factory), config)


def _user_code_on_main_loop(options: dict[str, Any]) -> dict[str, Any]:
    """Run the replica's code (the API, the engine-core client) on the replica's own event
    loop, not on the thread Serve starts for user code by default: every streamed chunk
    otherwise crosses between the two loops (about 0.04 CPU ms per token at 16 streams,
    `tandem bench serve --variants single single-userthread`). Safe here because nothing
    in it blocks: the engine runs in its own process. A runtime_env that sets the variable
    itself wins."""
    actor = dict(options.get("ray_actor_options", {}))
    env = dict(actor.get("runtime_env", {}))
    env["env_vars"] = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
                       **env.get("env_vars", {})}
    return {**options, "ray_actor_options": {**actor, "runtime_env": env}}
