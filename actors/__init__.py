"""Ray actors: tensor-parallel shard workers and the group that drives them.

- shard_worker.py: one rank (its weight slices, its KV-cache heads, the engine step).
- shard_group.py: ShardGroupExecutor, the Executor over tp ranks in a placement group.
- engine_factory.py: sharded_engine(), an LLMEngine whose executor is such a group.
- gpu_smoke.py: the same worker code over NCCL without Ray (scripts/gpu_check.sh).
- speculation_pools.py: SpeculationPools, one Executor over a verify pool and draft pool
  replicas (both run each step at once; a lost draft replica is rebuilt in the background).
- pipelined_engine.py: PipelinedEngine (the engine plus the spec_pipelined mode) and
  disaggregated_engine(), which starts the pools.

What is split: q/k/v projections by heads (column-parallel; kv heads split when there are at
least tp of them, otherwise each is replicated on the ranks whose query heads use it), the
MLP's gate/up by columns, o_proj and down_proj by rows with one all-reduce each. What is
replicated: the embedding, the LM head and the norms. The shipped vocabulary is small (4096 x
256: 2 x 4 MB in float32), and a replicated head gives every rank whole logit rows, so the
sampler (top-k/top-p, Gumbel noise keyed by token id) needs no gather and rank 0 answers
alone. A vocab-parallel head pays once the vocabulary is large (a 128k x 4096 head is 1 GB in
bf16): then the LM head splits by rows and the sampler gathers or reduces across ranks.
"""
