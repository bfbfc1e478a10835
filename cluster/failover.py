"""When the model-server replica behind a request dies (SIGKILL, its node lost), the client
gets an answer, never a cut connection or a hang: a request that has received nothing yet is
sent again (Serve routes it to a live replica, or holds it until one has started); one that
has streamed gets an error event in OpenAI's shape and its stream ends; a non-streamed one
gets a 503 saying what happened."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ray.exceptions import RayActorError

from cluster.job_builder import BadRequest

REPLICA_LOST = RayActorError  # ActorDiedError, ActorUnavailableError
MAX_RESENDS = 2


def lost_message(err: BaseException) -> str:
    return (f"the model-server replica serving this request was lost "
            f"({type(err).__name__}); the request can be retried")


def lost(err: BaseException) -> BadRequest:
    return BadRequest(503, lost_message(err), None, "server_error", "replica_lost")


async def first_item(send: Callable[[], Any]) -> tuple[Any, Any]:
    """(the response generator, its first item), resending while the replica is lost
    before it answered anything."""
    for attempt in range(MAX_RESENDS + 1):
        gen = send()
        try:
            return gen, await gen.__anext__()
        except REPLICA_LOST as err:
            gen.cancel()
            if attempt == MAX_RESENDS:
                raise lost(err) from None
            await asyncio.sleep(0.5 * (attempt + 1))
        except BaseException:
            gen.cancel()
            raise
    raise AssertionError("unreachable")
