"""SAV Explorer: Sparse Attention Vectors over the heads of generative vision-language models.

    from sav_explorer import Encoding, load_model, load_examples, fit_examples, predict_examples
    loaded = load_model()                                   # the bundled teaching model
    clf, acts = fit_examples(loaded, load_examples("assets/examples/colour/support.jsonl"), Encoding(max_pixels=448 * 448), k=20)
    predict_examples(loaded, clf, queries)                  # read as clf.encoding says, as the support set was

The public API: the pipeline's steps, its records and its errors, re-exported here.
"""

from .answers import generate_answers
from .capture import CaptureCancelled, HeadActivations, HeadCapture, capture_heads
from .classifier import HeadVote, Prediction, SAVClassifier
from .data import Example, load_examples, open_image
from .encoding import Batch, Encoding, RunOptions, batches, encode
from .errors import ClassifierFileError, DataError, ModelLoadError, SAVError
from .heads import HeadLayout, LayerBlock
from .manifest import Manifest, Settings
from .mistakes import Mistake, Projection, head_projection, misclassified
from .models import (
    AttentionSite,
    LoadedModel,
    build_prompt,
    count_image_tokens,
    default_model_id,
    find_attention_sites,
    load_model,
)
from .pipeline import (
    EvalReport,
    Evaluation,
    evaluate,
    evaluate_examples,
    fit_examples,
    predict_examples,
    save_activations,
    save_head_scores,
)
from .trace import Trace

__all__ = [
    "AttentionSite",
    "Batch",
    "CaptureCancelled",
    "ClassifierFileError",
    "DataError",
    "Encoding",
    "EvalReport",
    "Evaluation",
    "Example",
    "HeadActivations",
    "HeadCapture",
    "HeadLayout",
    "HeadVote",
    "LayerBlock",
    "LoadedModel",
    "Manifest",
    "Mistake",
    "ModelLoadError",
    "Prediction",
    "Projection",
    "RunOptions",
    "SAVClassifier",
    "SAVError",
    "Settings",
    "Trace",
    "batches",
    "build_prompt",
    "capture_heads",
    "count_image_tokens",
    "default_model_id",
    "encode",
    "evaluate",
    "evaluate_examples",
    "find_attention_sites",
    "fit_examples",
    "generate_answers",
    "head_projection",
    "load_examples",
    "load_model",
    "misclassified",
    "open_image",
    "predict_examples",
    "save_activations",
    "save_head_scores",
]
