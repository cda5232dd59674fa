"""Model access: load any Hugging Face image-text-to-text model and find its attention heads.

    loaded = load_model("HuggingFaceTB/SmolVLM-256M-Instruct")        # or a local folder
    loaded.sites[0]   # AttentionSite(layer=0, name='model.text_model.layers.0.self_attn.o_proj', ...)
    prompt = build_prompt(loaded.processor, "What is shown?", n_images=1)

Everything that differs between model families lives in this file: where the decoder layers
are, which layers have an attention output projection, head sizes, and how prompts are written.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from ..data import VideoFile
from ..errors import DataError, ModelLoadError
from ..heads import HeadLayout, LayerBlock

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


@dataclass(frozen=True)
class AttentionSite:
    """One decoder layer's attention output projection; its input holds `n_heads` slices of `head_dim`."""

    layer: int  # index in the decoder's layer list
    name: str  # module path, e.g. "model.language_model.layers.3.self_attn.o_proj"
    n_heads: int
    head_dim: int
    module: nn.Linear = field(repr=False, compare=False)


@dataclass
class LoadedModel:
    model: nn.Module
    processor: object
    model_id: str
    revision: str
    sites: list[AttentionSite]
    n_layers: int  # all decoder layers, including those without heads we can read
    layout: HeadLayout = field(init=False)  # every (layer, head) of `sites`, in capture order

    def __post_init__(self) -> None:
        self.layout = HeadLayout(tuple(LayerBlock(site.layer, site.n_heads, site.head_dim) for site in self.sites))

    @property
    def input_device(self) -> torch.device:
        return next(self.model.parameters()).device


def pick_device(device: str | None) -> str:
    if device:
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load_model(
    model_id: str | None = None,
    *,
    revision: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
    device_map: str | None = None,
) -> LoadedModel:
    """Loads model and processor by hub id or local folder, in eval mode, never with remote code.

    dtype: "float32", "bfloat16", "float16" or "auto" (the checkpoint's); default float32 on CPU and
    bfloat16 on an accelerator. device_map (e.g. "auto") shards a large model with accelerate and
    replaces `device`. A token for gated models comes from `$HF_TOKEN`.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model_id = model_id or default_model_id()
    location = model_location(model_id)
    device = pick_device(device) if device_map is None else None
    dtype = dtype or ("float32" if device in ("cpu", None) else "bfloat16")
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
        raise ModelLoadError(f"could not load model {model_id!r}: {hint} ({type(error).__name__}: {_first_line(error)})") from error
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


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The text decoder's list of layers, via `get_decoder()` (Llama 4 returns a *ForCausalLM)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    for candidate in (decoder, getattr(decoder, "model", None)):
        layers = getattr(candidate, "layers", None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ModelLoadError(f"{type(model).__name__} has no text decoder with a list of layers that SAV Explorer can find")


def find_attention_sites(model: nn.Module) -> list[AttentionSite]:
    """Every decoder layer's attention output projection, with its head count and size.

    Head size comes from the attention module (`head_dim`), never `hidden_size // num_heads`,
    which is wrong for Gemma 3 and Mistral 3 and varies by layer in Gemma 4. Layers without an
    `o_proj` (Qwen3.5's linear-attention blocks) are skipped; Mllama's cross-attention layers
    are read like the others (they run whenever the input has an image).
    """
    names = {module: name for name, module in model.named_modules()}
    sites = []
    for index, layer in enumerate(decoder_layers(model)):
        attention = getattr(layer, "self_attn", None) or getattr(layer, "cross_attn", None)
        o_proj = getattr(attention, "o_proj", None)
        if not isinstance(o_proj, nn.Linear):
            continue
        head_dim = getattr(attention, "head_dim", None)
        if not isinstance(head_dim, int) or head_dim <= 0:
            raise ModelLoadError(f"layer {index}: attention module {type(attention).__name__} has no integer head_dim; got {head_dim!r}")
        if o_proj.in_features % head_dim:
            raise ModelLoadError(
                f"layer {index}: o_proj input size {o_proj.in_features} is not a multiple of head_dim {head_dim}; "
                "expected n_heads x head_dim"
            )
        sites.append(AttentionSite(index, names[o_proj], o_proj.in_features // head_dim, head_dim, o_proj))
    if not sites:
        raise ModelLoadError(f"{type(model).__name__} has no decoder layer with an attention output projection (o_proj); SAVs need one")
    return sites


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


IMAGE_PLACEHOLDER = "<image>"  # in a question: where an image stands, in order (interleaved images, as BLINK's rows)


def build_prompt(processor, question: str, n_images: int | Sequence = 1) -> str:
    """The prompt for images plus a question, ending with the generation prompt.

    Uses the processor's chat template: the images first, then the question; or, where the
    question holds `<image>` placeholders, each image where its placeholder stands. Processors
    without a template (many PaliGemma checkpoints) get the image tokens followed by the question,
    the format PaliGemma was trained on.
    """
    media = ["image"] * n_images if isinstance(n_images, int) else ["video" if isinstance(m, VideoFile) else "image" for m in n_images]
    n_images = len(media)
    pieces = question.split(IMAGE_PLACEHOLDER)
    placeholders = len(pieces) - 1
    if placeholders and "video" in media:
        raise DataError(f"{IMAGE_PLACEHOLDER} placeholders place images; this example holds a video")
    if placeholders and placeholders != n_images:
        raise DataError(f"the question holds {placeholders} {IMAGE_PLACEHOLDER} placeholders for {n_images} image(s)")
    if getattr(processor, "chat_template", None):
        if placeholders:
            content = []
            for i, piece in enumerate(pieces):
                if piece:
                    content.append({"type": "text", "text": piece})
                if i < placeholders:
                    content.append({"type": "image"})
        else:
            content = [{"type": kind} for kind in media] + [{"type": "text", "text": question}]
        messages = [{"role": "user", "content": content}]
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    image_token = getattr(processor, "image_token", None) or getattr(getattr(processor, "tokenizer", None), "image_token", None) or ""
    return image_token * n_images + "".join(pieces)


def unseen_words(processor, texts: Iterable[str]) -> list[str]:
    """Words of `texts` (each once, in order) that the tokenizer turns into its unknown token: the model never sees them."""
    tokenizer = getattr(processor, "tokenizer", processor)
    unknown = getattr(tokenizer, "unk_token_id", None)
    if unknown is None:
        return []
    words = dict.fromkeys(word for text in texts for word in text.split())
    return [word for word in words if unknown in tokenizer(word, add_special_tokens=False)["input_ids"]]


def prepare_inputs(loaded: LoadedModel, images: list[list], prompts: list[str], image_budget=None, video_frames: int | None = None) -> dict:
    """Processor output for a batch: a list of images per example (nested, as Gemma 3, Mllama and SmolVLM require).
    `image_budget` (`budget.BudgetSettings`) adds the processor settings that keep each image within it;
    `video_frames` samples that many frames of each video, evenly (default: the processor's own sampling)."""
    processor = loaded.processor
    settings = dict(image_budget.kwargs) if image_budget is not None else {}
    videos = [item for row in images for item in row if isinstance(item, VideoFile)]
    if videos:
        if getattr(processor, "video_processor", None) is None:
            raise DataError(f"{type(loaded.model).__name__} reads no video: its processor has no video processor")
        decoded = [_decode_video(video) for video in videos]
        settings["videos"] = [frames for frames, _ in decoded]
        settings["video_metadata"] = [metadata for _, metadata in decoded]
        if video_frames is not None:
            shortest = min(len(frames) for frames, _ in decoded)
            if not 1 <= video_frames <= shortest:
                raise DataError(f"--frames must be between 1 and the shortest video's {shortest} frames; got {video_frames}")
            settings.update(do_sample_frames=True, num_frames=video_frames)
        images = [[item for item in row if not isinstance(item, VideoFile)] for row in images]
        if not any(images):
            inputs = processor(text=prompts, padding=True, return_tensors="pt", **settings)
            return {k: v.to(loaded.input_device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    try:
        inputs = processor(images=images, text=prompts, padding=True, return_tensors="pt", **settings)
    except (ValueError, TypeError):
        if any(len(row) != 1 for row in images):
            raise
        inputs = processor(images=[row[0] for row in images], text=prompts, padding=True, return_tensors="pt", **settings)
    device = loaded.input_device
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def _decode_video(video: VideoFile):
    """All frames and their metadata, decoded with PyAV; the processor samples frames by its own settings."""
    from transformers.video_utils import load_video

    try:
        return load_video(str(video.path), backend="pyav")
    except ImportError:
        raise DataError("reading video needs PyAV: pip install av (it is in requirements.txt)") from None
    except Exception as error:  # noqa: BLE001 - a damaged or unsupported file: name it
        raise DataError(f"could not read the video {video.path.name}: {_first_line(error)}") from None


def image_token_id(loaded: LoadedModel) -> int | None:
    """The id of the token that stands for one image feature in `input_ids`, or None.

    The model's config is asked first: it names the token whose positions receive image features
    (Gemma 3's processor calls its begin-of-image token `image_token_id`).
    """
    config = loaded.model.config
    for name in ("image_token_id", "image_token_index"):
        token_id = getattr(config, name, None)
        if isinstance(token_id, int):
            return token_id
    processor = loaded.processor
    tokenizer = getattr(processor, "tokenizer", processor)
    for owner in (tokenizer, processor):
        token_id = getattr(owner, "image_token_id", None)
        if isinstance(token_id, int):
            return token_id
    return None


def count_image_tokens(loaded: LoadedModel, input_ids: torch.Tensor) -> list[int]:
    """Image tokens per example of a processed batch: (batch, seq) ids -> one count per row.

    Counts the positions that receive image features in the decoder's own sequence, a video's frames
    included (they cost the same). Mllama reads its images through cross-attention and keeps one
    `<|image|>` placeholder per image here.
    """
    token_id = image_token_id(loaded)
    if token_id is None:
        raise ModelLoadError(f"{type(loaded.model).__name__} names no image token; cannot count image tokens")
    video = _video_token_id(loaded)
    visual = (input_ids == token_id) | ((input_ids == video) if video is not None else False)
    return visual.sum(dim=-1).tolist()


def _video_token_id(loaded: LoadedModel) -> int | None:
    config = loaded.model.config
    for name in ("video_token_id", "video_token_index"):
        token_id = getattr(config, name, None)
        if isinstance(token_id, int):
            return token_id
    return None


@torch.no_grad()
def generate_answers(
    loaded: LoadedModel, images: list[list], questions: list[str], max_new_tokens: int = 24, image_budget=None
) -> list[str]:
    """The model's own greedy answers, as text."""
    prompts = [build_prompt(loaded.processor, q, row) for row, q in zip(images, questions)]
    inputs = prepare_inputs(loaded, images, prompts, image_budget)
    output = loaded.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    return [text.strip() for text in loaded.processor.batch_decode(new_tokens, skip_special_tokens=True)]


def quiet_transformers() -> None:
    """Silences transformers' weight-loading bars and notices in command-line tools, which report progress themselves."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else ""
