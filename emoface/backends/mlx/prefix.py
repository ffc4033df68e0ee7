"""The first turn's KV state, computed once per (image, first prompt) and copied per conversation.

Conversations that start with the same first turn (the image and the emotion question: baseline,
every A3 temperature and repeat, A4, A5) share the KV state of that turn's prompt. mlx-vlm's own
chunked prefill computes a prompt as "all tokens but the last" followed by the last token alone, so
a state holding the first ``n - 1`` prompt tokens, continued with the last token, computes exactly
what a conversation-at-a-time run computes (tested to be bit-identical at T = 0 and at T > 0 with
the same seeds). Each conversation starts from its own copy of the cache arrays, so no conversation
can see another's tokens.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import mlx.core as mx
from mlx_vlm.generate.common import PromptCacheState


@dataclass
class FirstTurnSeed:
    """The KV state after the first ``len(token_ids)`` tokens of a first-turn prompt."""

    token_ids: list[int]
    cache: list

    def state(self) -> PromptCacheState:
        """A fresh :class:`PromptCacheState` over copies of the cache arrays."""
        st = PromptCacheState()
        st.token_ids = list(self.token_ids)
        st.cache = [copy_cache(c) for c in self.cache]
        return st


def copy_cache(c):
    """A new cache object of the same kind whose arrays are new array objects (mlx-vlm updates
    cache arrays in place, so two conversations must never hold the same array object)."""
    state = c.state
    if isinstance(state, tuple | list):
        state = type(state)(_copy_arrays(s) for s in state)
    return type(c).from_state(state, c.meta_state)


def _copy_arrays(x):
    if isinstance(x, mx.array):
        return mx.array(x)
    if isinstance(x, tuple | list):
        return type(x)(_copy_arrays(v) for v in x)
    return x


class SeedCache:
    """A small LRU of first-turn seeds keyed by (image digest, first-turn prompt)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], FirstTurnSeed] = OrderedDict()

    def get(self, key: tuple[str, str]) -> FirstTurnSeed | None:
        seed = self._items.get(key)
        if seed is not None:
            self._items.move_to_end(key)
        return seed

    def put(self, key: tuple[str, str], seed: FirstTurnSeed) -> None:
        if self.size <= 0:
            return
        self._items[key] = seed
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()
