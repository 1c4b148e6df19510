"""MrLoRA settings: the block ranks, the scale rule and where adapters go."""

from __future__ import annotations

import math
from dataclasses import dataclass

from kdlora.errors import UserError

SCALINGS = ("rank_stabilized", "standard")


@dataclass(frozen=True)
class MrLoRAConfig:
    ranks: tuple[int, ...] = (8, 4, 2, 1)
    alpha: float = 16.0
    dropout: float = 0.05
    scaling: str = "rank_stabilized"  # s_i = alpha / sqrt(r_i); "standard": alpha / r_i
    target_modules: tuple[str, ...] = ("query", "value")

    def __post_init__(self) -> None:
        if not self.ranks or any(not isinstance(r, int) or isinstance(r, bool) or r < 1 for r in self.ranks):
            raise UserError(f"mrlora ranks must be a non-empty list of positive integers, got {list(self.ranks)}")
        if not self.alpha > 0:
            raise UserError(f"mrlora alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"mrlora dropout must be in [0, 1), got {self.dropout}")
        if self.scaling not in SCALINGS:
            raise UserError(f"mrlora scaling must be one of {', '.join(SCALINGS)}, got {self.scaling!r}")
        if not self.target_modules:
            raise UserError("mrlora needs at least one target module name")

    def block_scales(self) -> tuple[float, ...]:
        """s_i per block. Rank-stabilised scaling (as rsLoRA) keeps each block's update of similar
        size whatever its rank, so the rank-1 block is not drowned by the rank-8 one."""
        if self.scaling == "rank_stabilized":
            return tuple(self.alpha / math.sqrt(r) for r in self.ranks)
        return tuple(self.alpha / r for r in self.ranks)
