"""One bounded, thread-safe registry for every process-wide table of the frozen pass.

Loaded backbones, tapped networks, their shape probes and ONNX Runtime sessions are shared by
the clones of an estimator (the folds and candidates of a grid search), so each is built once;
each table keeps only its ``size`` most recently used entries, so a long session that tries
many networks does not hold all of them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

__all__ = ["Registry"]


class Registry:
    """A least-recently-used mapping of at most ``size`` entries.

    Examples
    --------
    >>> from sktransfer.frozen.registry import Registry
    >>> table = Registry(2)
    >>> table.put("a", 1); table.put("b", 2); table.put("c", 3)
    >>> table.get("a") is None, table.get("c")
    (True, 3)
    """

    def __init__(self, size: int):
        self.size = int(size)
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key, default=None):
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
