"""How many forwards a request stays in quadratic speculation once it enters, measured.

Entering quadratic speculation costs a plain draft pass that emits nothing; the selector
spreads that pass over the forwards the request is expected to stay
(policies/option_prices.py `_prices`). Assuming it stays until it finishes (or a fixed
horizon) underprices entries when the selector re-decides every step and requests leave
after a few forwards: measured at the all-tight workload with NLD-8B-like acceptance, high
load (bench/slo_mix.py), 157 entries for 458 quadratic forwards, 2.9 per entry, priced over
8. The stay is learnt from what the policy observes (entries and quadratic forwards), shrunk
toward `prior` by `prior_entries` pseudo-entries so that the first entries do not decide it
alone.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EntryStay:
    prior: float = 8.0  # forwards per entry before anything is measured
    prior_entries: float = 8.0  # weight of the prior, in entries
    num_entries: int = 0
    num_forwards: int = 0

    def __post_init__(self) -> None:
        if self.prior < 1 or self.prior_entries <= 0:
            raise ValueError(f"EntryStay: prior {self.prior} forwards (>= 1) over "
                             f"{self.prior_entries} entries (> 0)")

    def observe_entry(self) -> None:
        self.num_entries += 1

    def observe_forward(self) -> None:
        self.num_forwards += 1

    @property
    def forwards(self) -> float:
        """Expected forwards per entry (at least 1)."""
        mean = ((self.num_forwards + self.prior * self.prior_entries)
                / (self.num_entries + self.prior_entries))
        return max(1.0, mean)
