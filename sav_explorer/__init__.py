"""SAV Explorer: Sparse Attention Vectors over the heads of generative vision-language models.

    from sav_explorer import load_model, load_examples, fit_examples, predict_examples
    loaded = load_model()                                   # the bundled teaching model
    clf, acts = fit_examples(loaded, load_examples("assets/examples/colour/support.jsonl"), k=20)
"""

from .capture import CaptureCancelled, HeadActivations, HeadCapture, capture_heads
from .classifier import HeadVote, Prediction, SAVClassifier, check_matches_model
from .data import Example, load_examples, open_image
from .errors import ClassifierFileError, DataError, ModelLoadError, SAVError
from .models import AttentionSite, LoadedModel, build_prompt, default_model_id, find_attention_sites, generate_answers, load_model
from .pipeline import evaluate, fit_examples, predict_examples, save_activations

__all__ = [
    "AttentionSite",
    "CaptureCancelled",
    "ClassifierFileError",
    "DataError",
    "Example",
    "HeadActivations",
    "HeadCapture",
    "HeadVote",
    "LoadedModel",
    "ModelLoadError",
    "Prediction",
    "SAVClassifier",
    "SAVError",
    "build_prompt",
    "capture_heads",
    "check_matches_model",
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
]
