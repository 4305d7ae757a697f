"""A block set as maximal runs of consecutive block ids.

The pool is block-major (``[num_blocks, layers, 2, heads, block_size,
head_dim]``), so the blocks ``start .. end - 1`` are ONE contiguous byte range
of the pool tensor: a plain slice ``pool.words[start:end]`` reaches them with
no index and no gather. A sorted block set is therefore a handful of such
slices, and each one can be zeroed at memset speed and verified by one
streaming reduction. This module only computes that decomposition; it holds
no payload and touches no memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch

__all__ = ["BlockRuns"]


@dataclass(frozen=True, slots=True)
class BlockRuns:
    """A set of block ids, ascending, with its maximal runs ``[start, end)``.

    Invariants (checked on construction): ``ids`` strictly ascending;
    ``runs`` disjoint, ascending, non-empty, never adjacent (maximal), and
    together exactly ``ids``. ``index``: the ids as a ``long`` tensor on the
    device of the fused (CUDA) path, built once per scrub; ``None`` where no
    indexed op will run. It is derived data, so it takes no part in equality.
    """

    ids: tuple[int, ...]
    runs: tuple[tuple[int, int], ...]
    index: torch.Tensor | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        expected = BlockRuns._runs_of(self.ids)
        if any(b <= a for a, b in zip(self.ids, self.ids[1:], strict=False)):
            raise ValueError("BlockRuns.ids must be strictly ascending")
        if self.runs != expected:
            raise ValueError(f"BlockRuns.runs {self.runs} are not the maximal runs of its ids")

    @classmethod
    def of(cls, block_ids: Iterable[int], device: torch.device | None = None) -> BlockRuns:
        """The runs of ``block_ids`` (any order, duplicates dropped).

        With ``device``, also the ``index`` tensor there (for the fused path).
        """
        ids = tuple(sorted(set(block_ids)))
        index = None if device is None else _index(ids, device)
        return cls(ids, cls._runs_of(ids), index)

    @classmethod
    def span(cls, start: int, end: int) -> BlockRuns:
        """The single run ``start .. end - 1`` (``start < end``)."""
        if not 0 <= start < end:
            raise ValueError(f"need 0 <= start < end, got [{start}, {end})")
        return cls(tuple(range(start, end)), ((start, end),))

    def without(self, block: int) -> BlockRuns:
        """The same set less ``block`` (its run splits in two); keeps the index's device."""
        device = None if self.index is None else self.index.device
        return BlockRuns.of((b for b in self.ids if b != block), device)

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[int]:
        return iter(self.ids)

    @staticmethod
    def _runs_of(ids: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
        runs: list[tuple[int, int]] = []
        for b in ids:
            if runs and runs[-1][1] == b:
                runs[-1] = (runs[-1][0], b + 1)
            else:
                runs.append((b, b + 1))
        return tuple(runs)


def _index(ids: tuple[int, ...], device: torch.device) -> torch.Tensor:
    host = torch.as_tensor(ids, dtype=torch.long)
    if device.type == "cpu":
        return host
    return host.to(device, non_blocking=True)
