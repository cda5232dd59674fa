"""Loading a model: any Hugging Face image-text-to-text checkpoint by hub id or local folder, never with remote code.

    loaded = load_model("HuggingFaceTB/SmolVLM-256M-Instruct")   # or a local folder; default: the bundled model
    loaded.sites[0], loaded.layout, loaded.revision

The checkpoint is named by its hub commit or a digest of its safetensors headers, so that a
saved classifier can refuse other weights.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch
from torch import nn

from ..errors import ModelLoadError
from ..heads import HeadLayout, LayerBlock
from .sites import AttentionSite, decoder_layers, find_attention_sites

if TYPE_CHECKING:
    from ..image_cache import ImageFeatureCache

ASSETS = Path(__file__).resolve().parents[2] / "assets"  # the teaching model and the example tasks
BUNDLED_MODEL = ASSETS / "shapes-llava"
EXAMPLES_DIR = ASSETS / "examples"
BUNDLED_ID = "sav-explorer/shapes-llava"  # how manifests name the bundled model, wherever it is installed
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_model_id() -> str:
    """The model used when none is given: `$SAV_MODEL`, else the bundled teaching model."""
    return os.environ.get("SAV_MODEL") or BUNDLED_ID


def model_location(model_id: str) -> str:
    """What `from_pretrained` is given for an id: the bundled model's folder, or the id itself."""
    return str(BUNDLED_MODEL) if model_id == BUNDLED_ID else model_id


@dataclass
class LoadedModel:
    model: nn.Module
    processor: object
    model_id: str
    revision: str
    sites: list[AttentionSite]
    n_layers: int  # all decoder layers, including those without heads we can read
    layout: HeadLayout = field(init=False)  # every (layer, head) of `sites`, in capture order
    image_cache: ImageFeatureCache | None = field(default=None, repr=False, compare=False)  # image features seen (`image_cache`)

    def __post_init__(self) -> None:
        self.layout = HeadLayout(tuple(LayerBlock(site.layer, site.n_heads, site.head_dim) for site in self.sites))

    @property
    def input_device(self) -> torch.device:
        return next(self.model.parameters()).device

    def with_image_cache(self, cache: ImageFeatureCache | None) -> LoadedModel:
        """The same model and processor, remembering image features in `cache` (a visitor's own, in the app)."""
        return replace(self, image_cache=cache)


def pick_device(device: str | None) -> str:
    if device:
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def default_dtype(device: str | None, device_map: str | None) -> str:
    """float32 on a CPU, bfloat16 on an accelerator; with a device map (which places the model itself),
    bfloat16 where an accelerator is present, as the documentation says."""
    if device_map is not None:
        return "bfloat16" if pick_device(None) != "cpu" else "float32"
    return "float32" if device in ("cpu", None) else "bfloat16"


def load_model(
    model_id: str | None = None,
    *,
    revision: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
    device_map: str | None = None,
    image_cache_bytes: int | None = None,
) -> LoadedModel:
    """Loads model and processor by hub id or local folder, in eval mode, never with remote code.

    dtype: "float32", "bfloat16", "float16" or "auto" (the checkpoint's); default float32 on CPU and
    bfloat16 on an accelerator. device_map (e.g. "auto") shards a large model with accelerate and
    replaces `device`. A token for gated models comes from `$HF_TOKEN`. image_cache_bytes: the bound
    of the image-feature cache the model carries (`image_cache`; None: `$SAV_IMAGE_CACHE_MB` or 5 %
    of the memory, at most 2 GiB; 0: off).
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ..image_cache import ImageFeatureCache

    model_id = model_id or default_model_id()
    location = model_location(model_id)
    device = pick_device(device) if device_map is None else None
    dtype = dtype or default_dtype(device, device_map)
    if dtype != "auto" and dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; expected one of {['auto', *DTYPES]}")
    common = {"revision": revision, "token": os.environ.get("HF_TOKEN"), "trust_remote_code": False}
    if not Path(location).exists() and not _in_local_cache(location, revision) and not _hub_reachable():
        raise ModelLoadError(
            f"could not load model {model_id!r}: it is not a local folder, not in the Hugging Face cache, "
            "and the Hub cannot be reached from this machine (no network?)"
        )
    try:
        processor = AutoProcessor.from_pretrained(location, **common)
        model = AutoModelForImageTextToText.from_pretrained(
            location,
            dtype="auto" if dtype == "auto" else DTYPES[dtype],
            device_map=device_map,
            **common,
        )
    except Exception as error:  # transformers raises many kinds for a bad checkpoint; all mean "cannot load"
        local = Path(location).exists()
        hint = (
            "the folder exists but does not hold a loadable image-text-to-text model and processor"
            if local
            else "it is neither a local folder nor in the Hugging Face cache, and the Hub could not be reached or has no such repository"
        )
        raise ModelLoadError(f"could not load model {model_id!r}: {hint} ({type(error).__name__}: {first_line(error)})") from error
    if device_map is None:
        model.to(device)
    model.eval()
    if hasattr(processor, "tokenizer"):
        processor.tokenizer.padding_side = "left"  # generation wants it; capture indexes the mask either way
    return LoadedModel(
        model=model,
        processor=processor,
        model_id=model_id,
        revision=checkpoint_revision(model, location, revision),
        sites=find_attention_sites(model),
        n_layers=len(decoder_layers(model)),
        image_cache=ImageFeatureCache(image_cache_bytes),
    )


def _in_local_cache(repo_id: str, revision: str | None) -> bool:
    """Whether the hub id's config is in the local cache, so loading needs no network."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)
    except (ValueError, OSError):  # not a valid repo id
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check, so that an offline machine fails in seconds, not after minutes of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def checkpoint_revision(model: nn.Module, location: str, requested: str | None) -> str:
    """Names the checkpoint: the hub commit hash where known, else a digest of its safetensors headers.

    The headers (tensor names, shapes, offsets) plus a few bytes at each end of the data identify
    a checkpoint without reading all of its weights.
    """
    commit = getattr(model.config, "_commit_hash", None)
    if commit:
        return commit
    folder = Path(location)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return requested or "unknown"
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as handle:
            header_size = struct.unpack("<Q", handle.read(8))[0]
            digest.update(handle.read(header_size))
            digest.update(handle.read(4096))
            handle.seek(max(0, path.stat().st_size - 4096))
            digest.update(handle.read())
    return "sha256-headers:" + digest.hexdigest()[:16]


def quiet_transformers() -> None:
    """Silences transformers' weight-loading bars and notices in command-line tools, which report progress themselves."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else ""
