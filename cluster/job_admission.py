"""Adding a job's choices to the engine, all or none, with refusals in OpenAI's terms. Runs
where the engine runs (the replica's engine thread, or the engine-core process)."""

from __future__ import annotations

import logging

from cluster.job import GenerateJob, JobError
from cluster.slo import engine_slo
from engine.engine import LLMEngine
from engine.policy import AdmissionError
from engine.request_error import RequestError

log = logging.getLogger(__name__)


def add_job(engine: LLMEngine, job: GenerateJob) -> list[tuple[str, int]] | JobError:
    """[(request id, prompt tokens)] per choice, or why the job was refused (a 500 is a
    bug, e.g. a broken policy: logged at ERROR here, counted by the caller)."""
    added: list[tuple[str, int]] = []
    try:
        for spec in job.choices:
            rid = job.request_id(spec)
            ids = engine.tokenize(spec.prompt, job.add_special_tokens)
            req = engine.add_request(ids, spec.sampling, job.decode, request_id=rid,
                                     priority=job.priority, slo=engine_slo(job.slo),
                                     logprobs=job.logprobs is not None)
            added.append((rid, len(req.prompt_ids)))
    except Exception as err:
        for rid, _ in added:
            engine.abort(rid)
        return _as_job_error(job, err)
    return added


def _as_job_error(job: GenerateJob, err: Exception) -> JobError:
    if isinstance(err, RequestError):
        param = job.prompt_field if err.param == "prompt" else err.param
        named = param is None or param in err.message  # say which field, for people
        return JobError(400, err.message if named else f"{param}: {err.message}", param)
    if isinstance(err, AdmissionError) and err.status == 503:
        # Infeasible even alone on this server: the request's SLO is at fault, not the
        # load, and a retry cannot help (issue 16: hostile input gets a 4xx, no 5xx).
        return JobError(400, f"slo: {err.reason}", "slo")
    if isinstance(err, AdmissionError):
        kind = "rate_limit_error" if err.status == 429 else "service_unavailable"
        return JobError(err.status, err.reason, None, kind)
    # Anything else is a bug (a broken policy, say): loud, and a 500.
    log.error("admitting %s failed", job.id, exc_info=err)
    return JobError(500, f"the server failed to admit the request: {type(err).__name__}: "
                         f"{err}", None, "server_error")
