"""Prompts and processor calls: the family-specific part of turning images and a question into model input.

    prompt = build_prompt(processor, "What is shown?", n_images=1)
    inputs = processor_inputs(loaded, images, prompts, settings)

Only `encoding.encode` calls these (see STYLE.md, point 5): every pass reads an example the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ..data import VideoFile
from ..errors import DataError
from .loading import LoadedModel, first_line

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


def processor_inputs(
    loaded: LoadedModel, images: list[list], prompts: list[str], image_budget=None, video_frames: int | None = None
) -> dict:
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
    # PaliGemma's processor returns training `labels` with every batch: the model would compute a loss
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items() if k != "labels"}


def _decode_video(video: VideoFile):
    """All frames and their metadata, decoded with PyAV; the processor samples frames by its own settings."""
    from transformers.video_utils import load_video

    try:
        return load_video(str(video.path), backend="pyav")
    except ImportError:
        raise DataError("reading video needs PyAV: pip install av (it is in requirements.txt)") from None
    except Exception as error:  # noqa: BLE001 - a damaged or unsupported file: name it
        raise DataError(f"could not read the video {video.path.name}: {first_line(error)}") from None


def answer_ending(processor) -> str:
    """What ends an answer in this family's template (e.g. "<|im_end|>", " </s>"), or the tokenizer's
    end-of-sequence token where the template says nothing after an answer (PaliGemma has no template).

    Likelihood scoring appends it to each label, so that a label is scored as a whole answer: without
    it, "square" would always beat "square circle" (a prefix's log-probability is never lower).
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    if getattr(processor, "chat_template", None):
        marker = "ANSWER"
        messages = [
            {"role": "user", "content": [{"type": "text", "text": "?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": marker}]},
        ]
        try:
            text = processor.apply_chat_template(messages, tokenize=False)
        except Exception:  # noqa: BLE001 - a template that cannot write an assistant turn: use the end-of-sequence token
            text = ""
        if marker in text:
            ending = text[text.rindex(marker) + len(marker) :].rstrip()
            if ending:
                return ending
    return getattr(tokenizer, "eos_token", None) or ""
