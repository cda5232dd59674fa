"""Loaded models, shared by all sessions: a small LRU registry keyed by (id, revision, dtype).

    registry = ModelRegistry(capacity=2)
    loaded = registry.get(ModelKey("sav-explorer/shapes-llava"))

A session stores only its `ModelKey`, so one visitor's choice never changes another's model; a
model evicted to make room is simply loaded again by the next session that needs it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelLoadError
from ..models import BUNDLED_ID, LoadedModel, load_model

# Transformers-native hub LMMs offered in the model list (they need the network or a warm cache).
POPULAR_MODELS = (
    "HuggingFaceTB/SmolVLM-256M-Instruct",
    "HuggingFaceTB/SmolVLM-500M-Instruct",
    "Qwen/Qwen2-VL-2B-Instruct",
    "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
    "google/gemma-3-4b-it",
)
GATED_MODELS = ("google/gemma-3-4b-it",)  # need an accepted licence and $HF_TOKEN; not preloaded on a Space
ALLOW_ANY_ENV = "SAV_ALLOW_ANY_MODEL"  # "1": any hub id or local folder may be typed in the UI
CAPACITY_ENV = "SAV_MODEL_CAPACITY"  # how many models stay loaded at once (default 2)


@dataclass(frozen=True)
class ModelKey:
    model_id: str
    revision: str | None = None
    dtype: str | None = None  # None: the engine's default for the device


def any_model_allowed() -> bool:
    return os.environ.get(ALLOW_ANY_ENV, "").strip().lower() in ("1", "true", "yes")


def model_choices(default: str) -> list[str]:
    """The list shown in the UI: the operator's default first, then the bundled model and popular hub models."""
    return list(dict.fromkeys([default, BUNDLED_ID, *POPULAR_MODELS]))


def check_allowed(model_id: str, default: str) -> str:
    """Returns the cleaned id, or refuses ids outside the list unless `$SAV_ALLOW_ANY_MODEL` is set."""
    model_id = (model_id or "").strip()
    if not model_id:
        raise ModelLoadError("choose a model")
    if model_id in model_choices(default) or any_model_allowed():
        return model_id
    kind = "a local path" if Path(model_id).is_absolute() or model_id.startswith(".") else "a model outside the list"
    raise ModelLoadError(f"{kind} ({model_id!r}) is not allowed here; pick one from the list (the operator can set {ALLOW_ANY_ENV}=1)")


class ModelRegistry:
    """At most `capacity` loaded models, least recently used evicted first; one load per key at a time."""

    def __init__(self, capacity: int | None = None, loader: Callable[..., LoadedModel] = load_model, device: str | None = None):
        self.capacity = max(1, capacity or int(os.environ.get(CAPACITY_ENV, "2")))
        self.loader = loader
        self.device = device
        self._models: OrderedDict[ModelKey, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[ModelKey, threading.Lock] = {}
        self.load_seconds: dict[ModelKey, float] = {}  # how long each loaded model took to load

    def __contains__(self, key: ModelKey) -> bool:
        return key in self._models

    def keys(self) -> list[ModelKey]:
        return list(self._models)

    def get(self, key: ModelKey) -> LoadedModel:
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # two sessions asking for the same new model load it once
            with self._lock:
                if key in self._models:
                    return self._models[key]
            started = time.perf_counter()
            loaded = self.loader(key.model_id, revision=key.revision, dtype=key.dtype, device=self.device)
            with self._lock:
                self.load_seconds[key] = time.perf_counter() - started
                self._models[key] = loaded
                while len(self._models) > self.capacity:
                    self._models.popitem(last=False)
            return loaded
