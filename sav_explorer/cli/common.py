"""What every command shares: model options, loading, progress, a classifier with its model, head names."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from ..classifier import SAVClassifier
from ..data import Example, load_examples
from ..encoding import Encoding, RunOptions
from ..errors import DataError
from ..image_cache import CACHE_ENV, megabytes
from ..models import default_model_id, load_model, unseen_words
from ..official import FORMATS, parse_image_roots, read_official

DEFAULT_K = 20  # the paper's
OFFICIAL_NAMES = ", ".join(f.name for f in FORMATS.values())


def model_options(parser: argparse.ArgumentParser, default: str | None) -> None:
    help_model = (
        "hub id or local folder (default: $SAV_MODEL or the bundled teaching model)" if default else "default: the classifier's model"
    )
    parser.add_argument("--model", default=default, help=help_model)
    help_revision = "hub branch, tag or commit" + (" (default: the latest)" if default else " (default: the classifier's own)")
    parser.add_argument("--revision", help=help_revision)
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), help="default float32 on CPU, bfloat16 on GPU")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the best available)")
    parser.add_argument("--device-map", help="e.g. auto: shard across GPUs with accelerate (replaces --device)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--max-activation-gb",
        type=float,
        metavar="GB",
        help="activation memory a forward pass may take (default: half the free memory, or $SAV_MAX_ACTIVATION_GB); "
        "a batch over it runs one example at a time, an example over it is refused",
    )
    parser.add_argument(
        "--image-cache-mb",
        metavar="MB",
        help="image features kept so that an image seen again costs only the decoder "
        f"(default: ${CACHE_ENV}, else 5%% of the memory, at most 2048; 0 turns it off)",
    )
    help_budget = "image tokens per image at most, in the family's own processor settings"
    parser.add_argument(
        "--max-image-tokens",
        type=int,
        metavar="N",
        help=f"{help_budget} (default: the processor's own)" if default else f"{help_budget} (default: the classifier's)",
    )
    help_pixels = "larger images are scaled down to this many pixels before the processor, the aspect kept"
    parser.add_argument(
        "--max-pixels",
        type=int,
        metavar="N",
        help=f"{help_pixels} (default: images as given)" if default else f"{help_pixels} (default: the classifier's)",
    )


def data_options(parser: argparse.ArgumentParser) -> None:
    """How a data file is read: this project's rows, or an official SAVs task file with its prompt template."""
    parser.add_argument(
        "--format", default="rows", metavar="rows|official:NAME", help=f"rows (default) or official:NAME, NAME one of {OFFICIAL_NAMES}"
    )
    parser.add_argument("--image-root", action="append", default=[], metavar="OLD=NEW", help="rewrite an image path prefix (repeatable)")
    parser.add_argument(
        "--root", type=Path, help="folder that relative image paths of official files resolve against (default: the file's)"
    )


def frames_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--frames", type=int, metavar="N", help="frames sampled evenly from each video row (default: the processor's own sampling)"
    )


def ray_options(parser: argparse.ArgumentParser) -> None:
    """The model run on a Ray cluster instead of this process (an optional extra: requirements-ray.txt)."""
    parser.add_argument(
        "--ray", metavar="ADDRESS", help="run the model on Ray: local (a cluster in this process), auto, or ray://host:port"
    )
    parser.add_argument(
        "--ray-actors", type=int, metavar="N", help="actors, each loading the model once (default: one per GPU, else per CPUs)"
    )
    parser.add_argument("--ray-cpus", type=float, default=1.0, metavar="N", help="CPUs per actor (default 1)")


def ray_options_of(args):
    """--ray, --ray-actors and --ray-cpus, checked."""
    from ..distributed import RayOptions

    if args.ray_actors is not None and args.ray_actors < 1 or args.ray_cpus <= 0:
        raise DataError("--ray-actors and --ray-cpus must be positive")
    return RayOptions(args.ray, args.ray_actors, args.ray_cpus)


def model_spec(args, clf: SAVClassifier | None = None):
    """The model the cluster's actors load: --model, else the classifier's, else the default."""
    from ..distributed import ModelSpec

    model_id = getattr(args, "model", None) or (clf.manifest_.model_id if clf is not None else None)
    revision = getattr(args, "revision", None) or (hub_revision(clf.manifest_.revision) if clf is not None else None)
    return ModelSpec(
        model_id or default_model_id(), revision=revision, dtype=args.dtype, device=args.device, image_cache_bytes=image_cache_bytes(args)
    )


def check_ray_model(args, clf: SAVClassifier, description: dict) -> None:
    """Refuses a classifier made for another model than the one the actors loaded (as a local run does)."""
    from ..distributed import layout_of

    check_made_for(args, clf, description["model_id"], description["revision"], layout_of(description))


def fit_encoding(args, examples: list[Example]) -> Encoding:
    """The encoding a fit records: --question (else the first row's, for later images without one),
    --max-pixels, --max-image-tokens and --frames."""
    return Encoding(
        question=args.question or examples[0].question,
        max_pixels=args.max_pixels,
        max_image_tokens=args.max_image_tokens,
        video_frames=getattr(args, "frames", None),
    )


def encoding_for(args, clf: SAVClassifier) -> Encoding:
    """The classifier's encoding with what the command line overrides; each override that changes what
    the model reads is named on stderr, since the class means were made from inputs read the fit's way."""
    encoding, notes = clf.encoding.overridden(
        question=getattr(args, "question", None),
        max_pixels=getattr(args, "max_pixels", None),
        max_image_tokens=getattr(args, "max_image_tokens", None),
        video_frames=getattr(args, "frames", None),
    )
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    return encoding


def run_options(args, what: str | None = None) -> RunOptions:
    """--batch-size and --max-activation-gb, with a progress bar labelled `what`."""
    return RunOptions(batch_size=args.batch_size, on_batch=progress(what) if what else None, memory_limit=memory_limit(args))


def captured_on_ray(args, examples: list[Example], encoding: Encoding, clf: SAVClassifier | None = None, *, layers=None):
    """`capture_heads` for a command given --ray: the model loads in the cluster's actors, not here."""
    from ..distributed import capture_on_ray

    return capture_on_ray(
        ray_options_of(args),
        model_spec(args, clf),
        examples,
        encoding,
        layers=layers,
        batch_size=args.batch_size,
        memory_limit=memory_limit(args),
    )


def read_data(args, source, question: str | None = None) -> list[Example]:
    """The examples of a data argument, in the format the command was given."""
    if args.format == "rows":
        return load_examples(source, question=question)
    kind, _, name = args.format.partition(":")
    if kind != "official" or not name:
        raise DataError(f"--format is rows or official:NAME (NAME one of {OFFICIAL_NAMES}); got {args.format!r}")
    return read_official(source, name, image_roots=parse_image_roots(args.image_root), root=args.root)


def image_token_summary(counts: list[int] | None) -> dict | None:
    """Image tokens per example: min, mean and max, for --json reports."""
    if not counts:
        return None
    return {"min": min(counts), "mean": round(sum(counts) / len(counts), 1), "max": max(counts)}


def image_cache_bytes(args) -> int | None:
    """--image-cache-mb in bytes; None: the default (`image_cache.default_cache_bytes`)."""
    raw = getattr(args, "image_cache_mb", None)
    return None if raw is None else megabytes(raw, "--image-cache-mb")


def load(args, model_id: str, revision: str | None = None):
    revision = getattr(args, "revision", None) or revision
    return load_model(
        model_id,
        revision=revision,
        dtype=args.dtype,
        device=args.device,
        device_map=args.device_map,
        image_cache_bytes=image_cache_bytes(args),
    )


def hub_revision(recorded: str) -> str | None:
    """A manifest's revision as the hub knows it: a commit, branch or tag; None for a local folder's
    digest of its weights (`checkpoint_revision`), which no hub can load."""
    return None if not recorded or recorded == "unknown" or recorded.startswith("sha256-headers:") else recorded


def progress(total_label: str):
    bar = tqdm(desc=total_label, unit="example", file=sys.stderr, disable=None)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def warn_unseen_words(loaded, questions) -> None:
    unseen = unseen_words(loaded.processor, questions)
    if unseen:
        print(
            f"warning: the model does not know these words of the question and will not see them: {', '.join(map(repr, unseen))}",
            file=sys.stderr,
        )


def classifier_and_model(args):
    clf = SAVClassifier.load(args.classifier)
    return clf, model_for(args, clf)


def model_for(args, clf: SAVClassifier):
    """The classifier's model (or --model) at the classifier's revision, so that a saved classifier
    loads after its hub repository moves on, refused when it is not the model it was made for.
    --revision loads another version on purpose: the mismatch is named on stderr, not refused."""
    loaded = load(args, args.model or clf.manifest_.model_id, hub_revision(clf.manifest_.revision))
    check_made_for(args, clf, loaded.model_id, loaded.revision, loaded.layout)
    return loaded


def check_made_for(args, clf: SAVClassifier, model_id: str, revision: str, layout) -> None:
    """`Manifest.check_matches`, but a revision asked for with --revision is named on stderr, not refused."""
    manifest = clf.manifest_
    if getattr(args, "revision", None) and revision != manifest.revision:
        print(
            f"warning: --revision {args.revision} loads {revision}; this classifier was made at revision {manifest.revision}: "
            "its class means may not fit these weights",
            file=sys.stderr,
        )
        revision = manifest.revision  # the head layout and the model id are still checked
    manifest.check_matches(model_id, revision, layout)


def heads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--heads", nargs="+", default=["selected"], metavar="L:H", help="selected (default), all, or heads as layer:head")


def chosen_heads(args, clf: SAVClassifier) -> list[tuple[int, int]]:
    """--heads: the classifier's selected heads, all its heads, or heads written layer:head."""
    if args.heads == ["selected"]:
        return clf.selected_heads
    if args.heads == ["all"]:
        return clf.layout_.heads
    return parse_heads(args.heads)


def parse_heads(texts: list[str]) -> list[tuple[int, int]]:
    heads = []
    for text in texts:
        layer, _, head = text.partition(":")
        if not (layer.isdigit() and head.isdigit()):
            raise DataError(f"heads are written layer:head, e.g. 2:0; got {text!r}")
        heads.append((int(layer), int(head)))
    return list(dict.fromkeys(heads))


def memory_limit(args) -> int | None:
    """--max-activation-gb in bytes (None: the default limit, half the free memory)."""
    gb = getattr(args, "max_activation_gb", None)
    if gb is None:
        return None
    if gb <= 0:
        raise DataError(f"--max-activation-gb must be positive; got {gb}")
    return int(gb * 1024**3)
