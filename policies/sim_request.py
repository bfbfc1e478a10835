"""One request inside the simulator: its cache, its progress, its mode iterations.

Iterations replay traces recorded on the real engine (policies.profile): each request is
bound to one recorded prompt and, per option, walks through that prompt's iterations in
order (wrapping around), so a request keeps its own acceptance as it would on the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.option import AR, DIFFUSION, LINEAR, QUADRATIC, Option
from policies.profile import Iteration, Profile
from policies.request_view import RequestView
from policies.workloads import RequestSpec


@dataclass
class SimRequest:
    spec: RequestSpec
    fixed: Option | None = None
    num_output: int = 0
    num_cached: int = 0
    num_blocks: int = 0
    first_token_s: float | None = None
    finish_s: float | None = None
    option: Option | None = None
    quad_ready: bool = False  # quadratic: drafts for the next forward exist
    forwards_left: int = 0  # of the current iteration (0: at a boundary)
    pending_tokens: int = 0  # emitted when the iteration's last forward ends
    cursors: dict[Option, int] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def num_tokens(self) -> int:
        return self.spec.num_prompt + self.num_output

    @property
    def num_pending(self) -> int:
        return self.num_tokens - self.num_cached

    @property
    def is_mid_iteration(self) -> bool:
        return self.forwards_left > 0

    def view(self, allow_lossy: bool = False) -> RequestView:
        s = self.spec
        return RequestView(s.id, s.arrival_s, s.slo, s.max_tokens, s.num_prompt,
                           self.num_output, self.num_pending, self.first_token_s,
                           self.option, self.fixed, self.is_mid_iteration,
                           allow_lossy or s.slo.allow_lossy, s.slo.priority)

    def reset_mode(self) -> None:
        self.forwards_left, self.pending_tokens, self.quad_ready = 0, 0, False

    def set_option(self, option: Option) -> None:
        if option != self.option:
            self.reset_mode()
        self.option = option

    def work_tokens(self) -> int:
        """Tokens the next decode forward puts in the batch."""
        o = self.option
        assert o is not None
        if o.mode == QUADRATIC and not self.quad_ready:
            return o.block  # the plain draft pass that starts quadratic speculation
        return o.work_tokens

    def slots_needed(self) -> int:
        o = self.option
        assert o is not None
        return self.num_tokens if o.mode == AR else self.num_cached + o.block

    def decode(self, profile: Profile) -> int:
        """Run one forward of the current option; the tokens it emits."""
        o = self.option
        assert o is not None
        if o.mode == QUADRATIC and not self.quad_ready:
            self.quad_ready = True
            return 0
        if self.forwards_left == 0:
            forwards, tokens = self._next_iteration(o, profile)
            self.forwards_left, self.pending_tokens = forwards, tokens
        self.forwards_left -= 1
        if self.forwards_left > 0:
            return 0
        tokens, self.pending_tokens = self.pending_tokens, 0
        return tokens

    def _next_iteration(self, o: Option, profile: Profile) -> Iteration:
        if o.mode == AR:
            return 1, 1
        prompts = profile.traces.get(o)
        if not prompts:
            return _fallback_iteration(o)
        trace = prompts[self.spec.prompt_index % len(prompts)]
        k = self.cursors.get(o, 0)
        self.cursors[o] = k + 1
        return trace[k % len(trace)]


def _fallback_iteration(o: Option) -> Iteration:
    """No trace for this option: assume the draft is always rejected."""
    return {LINEAR: (2, 1), QUADRATIC: (1, 1), DIFFUSION: (o.block, o.block)}[o.mode]
