"""A value kept for the objects it was computed from, until it is asked for with other objects.

What a population's chunks share (its center on the device, the first layer's base on the batch) is
computed for the first chunk and reused by the rest. The objects are compared by identity, never by id():
an id can be reused once its object is gone, while an object held here stays alive; populations and
batches are not modified once made, so the same objects mean the same value.
"""
from __future__ import annotations

from typing import Any, Callable


class KeptValue:
    def __init__(self):
        self._objects: tuple = ()
        self._tag: Any = None
        self._value: Any = None

    def get(self, objects: tuple, compute: Callable[[], Any], tag: Any = None) -> Any:
        """compute(), or the value kept from the last call if it had the same `objects` (each the very
        same object) and an equal `tag` (a value such as a device, compared with ==)."""
        same = (len(objects) == len(self._objects) and all(a is b for a, b in zip(objects, self._objects))
                and tag == self._tag)
        if not same or not objects:
            self._value, self._objects, self._tag = compute(), objects, tag
        return self._value
