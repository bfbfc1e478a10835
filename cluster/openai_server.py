"""The model server with OpenAI's API folded in (`layout: single`, the default where one
model is served): one deployment, so a token crosses one Ray hop (replica -> Serve proxy)
instead of two, and the API reads the job's events straight from the replica's own streams.
Autoscaling, routing and the handle methods (generate, health, metrics, model_info: what
batch jobs call) are the model server's, unchanged."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from cluster.config import TandemConfig
from cluster.job import ChoiceEvent, GenerateJob, JobAccepted, JobError
from cluster.metrics_board import BoardClient
from cluster.model_server import EngineFactory, ModelServer
from cluster.openai_api import OpenAIApi


class LocalBackend:
    """The model server in this same replica."""

    def __init__(self, server: ModelServer) -> None:
        self.server = server

    def stream(self, job: GenerateJob
               ) -> AsyncIterator[JobAccepted | JobError | list[ChoiceEvent]]:
        return self.server.events(job)

    async def close(self, stream: AsyncIterator[Any]) -> None:
        await stream.aclose()  # type: ignore[attr-defined]

    async def call(self, method: str) -> Any:
        return await getattr(self.server, method)()


@serve.ingress()
class OpenAIServer(OpenAIApi, ModelServer):
    def __init__(self, config: TandemConfig | dict[str, Any] | None = None,
                 engine_factory: EngineFactory | None = None) -> None:
        ModelServer.__init__(self, config, engine_factory)
        self.backend = LocalBackend(self)
        self.board = BoardClient(self.config_app_name())

    async def __del__(self) -> None:
        ModelServer.__del__(self)  # the engine core first
        nxt = getattr(super(ModelServer, self), "__del__", None)  # Serve's ASGI wrapper's
        if nxt is not None and inspect.iscoroutinefunction(nxt):
            await nxt()
