"""The HTTP ingress as a deployment of its own (`layout: split`): OpenAI's API
(cluster/openai_api.py) over a DeploymentHandle to the model-server deployment, which it
calls with stream=True. Events cross Ray as plain tuples (ChoiceEvent.to_wire). When the
client goes away the handle's generator is cancelled, and the model server aborts the job.
`layout: single` folds the API into the model server instead (cluster/openai_server.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from cluster import failover
from cluster.config import TandemConfig, load_config
from cluster.job import ChoiceEvent, GenerateJob, JobAccepted, JobError
from cluster.metrics_board import BoardClient
from cluster.openai_api import OpenAIApi


class HandleBackend:
    """The model server behind a DeploymentHandle."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle

    async def stream(self, job: GenerateJob
                     ) -> AsyncIterator[JobAccepted | JobError | list[ChoiceEvent]]:
        """A replica lost before its first item: sent again (cluster/failover.py); lost
        after: a 503 JobError, which ends the stream with an error event."""
        gen, first = await failover.first_item(
            lambda: self.handle.options(stream=True).generate.remote(job))
        try:
            yield first
            async for item in gen:
                yield [ChoiceEvent.from_wire(e) for e in item] if isinstance(item, list) \
                    else item
        except failover.REPLICA_LOST as err:
            yield JobError(503, failover.lost_message(err), None, "server_error")
        finally:
            gen.cancel()  # a no-op once it ended; an abort if the caller went away

    async def close(self, stream: AsyncIterator[Any]) -> None:
        await stream.aclose()  # type: ignore[attr-defined]

    async def call(self, method: str) -> Any:
        return await getattr(self.handle, method).remote()


def _app_name() -> str:
    try:
        return serve.get_replica_context().app_name
    except Exception:  # not inside a Serve replica (unit tests)
        return "default"


@serve.ingress()
class OpenAIIngress(OpenAIApi):
    def __init__(self, model_server: DeploymentHandle,
                 config: TandemConfig | dict[str, Any] | None = None) -> None:
        self.config = load_config(config)
        self.backend = HandleBackend(model_server)
        self.board = BoardClient(_app_name())
