"""SAV Explorer: Sparse Attention Vectors over the heads of generative vision-language models.

    from sav_explorer import load_model, load_examples, fit_examples, predict_examples
    loaded = load_model()                                   # the bundled teaching model
    clf, acts = fit_examples(loaded, load_examples("assets/examples/colour/support.jsonl"), k=20)

The public API: the pipeline's steps, its records and its errors, re-exported here.
"""

from .capture import CaptureCancelled, HeadActivations, HeadCapture, capture_heads
from .classifier import HeadVote, Prediction, SAVClassifier
from .data import Example, load_examples, open_image
from .errors import ClassifierFileError, DataError, ModelLoadError, SAVError
from .heads import HeadLayout, LayerBlock
from .manifest import Manifest, Settings
from .models import (
    AttentionSite,
    LoadedModel,
    build_prompt,
    count_image_tokens,
    default_model_id,
    find_attention_sites,
    generate_answers,
    load_model,
)
from .pipeline import EvalReport, evaluate, fit_examples, predict_examples, save_activations, save_head_scores

__all__ = [
    "AttentionSite",
    "CaptureCancelled",
    "ClassifierFileError",
    "DataError",
    "EvalReport",
    "Example",
    "HeadActivations",
    "HeadCapture",
    "HeadLayout",
    "HeadVote",
    "LayerBlock",
    "LoadedModel",
    "Manifest",
    "ModelLoadError",
    "Prediction",
    "SAVClassifier",
    "SAVError",
    "Settings",
    "build_prompt",
    "capture_heads",
    "count_image_tokens",
    "default_model_id",
    "evaluate",
    "find_attention_sites",
    "fit_examples",
    "generate_answers",
    "load_examples",
    "load_model",
    "open_image",
    "predict_examples",
    "save_activations",
    "save_head_scores",
]
