"""The model on a Ray cluster: Ray Data batch inference over a pool of actors.

    spec = ModelSpec("HuggingFaceTB/SmolVLM-256M-Instruct")
    result = capture_on_ray(RayOptions("auto"), spec, examples)   # RayCapture(activations, ...)
    out, description, pids = run_on_ray(options, spec, task, rows, batch_size)   # any task

Each actor (`ModelActor`) loads the model once and runs a task over batches of examples: head
capture here (`CaptureTask`), the model's answers under ablation (`ablation.AblationTask`), the
head lens (`lens.LensTask`). Examples travel in the dataset as bytes (their files' contents, with
their names), so workers on other machines need no shared disk; only the model must be loadable
everywhere (a hub id, or a folder every node can read). Rows come back in order
(`preserve_order`), and each says which process ran it, so a caller can see that the work ran in
actors and not in its own process. Ray is optional: `requirements-ray.txt`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .capture import HeadActivations, capture_heads
from .data import Example
from .encoding import Encoding, RunOptions
from .errors import ClassifierFileError, DataError, ModelLoadError, SAVError
from .heads import HeadLayout, LayerBlock
from .models import LoadedModel, load_model, model_location

RAY_INSTALL = "pip install -r requirements-ray.txt"
PACKAGE = Path(__file__).parent


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (needs the [data] extra: pyarrow)
    except ImportError:
        raise SAVError(f"--ray needs Ray with its data extra, which is not installed here: {RAY_INSTALL}") from None
    return ray


@dataclass(frozen=True)
class ModelSpec:
    """What an actor needs to load the model itself (the driver never loads it)."""

    model_id: str
    revision: str | None = None
    dtype: str | None = None
    device: str | None = None
    image_cache_bytes: int | None = None  # each actor's own image-feature cache (`image_cache`); None: the default

    def load(self) -> LoadedModel:
        location = model_location(self.model_id)
        # A relative folder is the driver's; actors start elsewhere.
        model_id = str(Path(location).resolve()) if Path(location).is_dir() else self.model_id
        loaded = load_model(
            model_id, revision=self.revision, dtype=self.dtype, device=self.device, image_cache_bytes=self.image_cache_bytes
        )
        loaded.model_id = self.model_id  # as the user named it, so saved classifiers match a local run's
        return loaded


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: `address` is "local" (a cluster started in this process) or what `ray.init`
    accepts ("auto", "ray://host:port"). Without `actors`: one per GPU, else one per `cpus_per_actor` CPUs."""

    address: str
    actors: int | None = None
    cpus_per_actor: float = 1.0


def _check_reachable(address: str) -> None:
    """A host:port (or ray://host:port) that does not answer is refused at once: Ray itself would retry
    for minutes, printing warnings."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "local", "auto" and the like: Ray's own resolution
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as error:
        raise SAVError(f"no Ray cluster answers at {address} ({error}): start one with `ray start --head`, or check the address") from None


def connect(address: str):
    """Joins (or, for "local", starts) a cluster once per process; the package travels to the workers."""
    ray = import_ray()
    if not ray.is_initialized():
        _check_reachable(address)
        env = {"py_modules": [str(PACKAGE)], "env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}}
        try:
            ray.init(address=address, runtime_env=env, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise SAVError(f"could not connect to the Ray cluster at {address!r}: {error}") from None
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # its progress bar stays; its INFO lines go
    return ray


def example_row(index: int, example: Example, question: str | None) -> dict:
    """An example as dataset columns: its files' names and bytes (uploads as PNG) and its final question."""
    names, files = [], []
    for number, item in enumerate(example.images):
        if isinstance(item, Image.Image):
            buffer = io.BytesIO()
            item.save(buffer, "PNG")
            names.append(f"image{number}.png")
            files.append(buffer.getvalue())
            continue
        path = Path(item)
        if not path.is_file():
            raise DataError(f"image file not found: {path}")
        names.append(path.name)
        files.append(path.read_bytes())
    return {"index": index, "names": names, "files": files, "question": example.question_or(question), "label": example.label or ""}


def as_batch(rows: list[dict]) -> dict:
    """Rows as the columns a batch has (for examples an actor needs whole, such as a support set)."""
    return {key: [row[key] for row in rows] for key in ("index", "names", "files", "question", "label")}


def examples_from_rows(batch: dict, folder: Path) -> list[Example]:
    """The batch's examples with their files written under `folder` (one sub-folder per image, so names may repeat)."""
    examples = []
    for index, names, files, question, label in zip(batch["index"], batch["names"], batch["files"], batch["question"], batch["label"]):
        paths = []
        for number, (name, data) in enumerate(zip(names, files)):
            path = folder / f"{index}-{number}" / Path(str(name)).name
            path.parent.mkdir(parents=True)
            path.write_bytes(bytes(data))
            paths.append(path)
        examples.append(Example(tuple(paths), str(question), str(label) or None))
    return examples


def examples_in_memory(batch: dict) -> list[Example]:
    """The batch's examples with their images decoded in memory (for examples an actor keeps for its lifetime)."""
    return [
        Example(tuple(Image.open(io.BytesIO(bytes(data))).convert("RGB") for data in files), str(question), str(label) or None)
        for files, question, label in zip(batch["files"], batch["question"], batch["label"])
    ]


class ModelActor:
    """A Ray Data callable class: loads the model once, then runs `task` on each batch of examples.
    An error the user can act on (an unreadable image, a model that does not load) comes back as a
    row's `error` ("Kind: message"), not as a crash, so that the driver can show its one line."""

    def __init__(self, spec: ModelSpec, task, threads: int):
        torch.set_num_threads(max(1, threads))
        self.task, self.failure, self.description = task, "", ""
        try:
            self.loaded = spec.load()
            task.setup(self.loaded)
        except SAVError as error:
            self.failure = f"{type(error).__name__}: {error}"
            return
        self.description = json.dumps(
            {
                "model_id": self.loaded.model_id,
                "revision": self.loaded.revision,
                "n_layers": self.loaded.n_layers,
                "layout": [[b.layer, b.n_heads, b.head_dim] for b in self.loaded.layout.blocks],
            }
        )

    def __call__(self, batch: dict) -> dict:
        n = len(batch["index"])
        error, columns = self.failure, None
        if not error:
            try:
                with tempfile.TemporaryDirectory() as folder:
                    columns = self.task(self.loaded, examples_from_rows(batch, Path(folder)))
            except SAVError as failure:
                error = f"{type(failure).__name__}: {failure}"
        return {
            "index": np.asarray(batch["index"]),
            "pid": np.full(n, os.getpid()),
            "model": np.asarray(["" if error else self.description] * n, dtype=object),
            "error": np.asarray([error] * n, dtype=object),
            **(columns if columns is not None else self.task.empty(n)),
        }


class CaptureTask:
    """Each example's heads, flattened: `capture_heads` in an actor."""

    def __init__(self, layers: list[int] | None, encoding: Encoding, memory_limit: int | None):
        self.layers, self.encoding = layers, encoding
        self.memory_limit = memory_limit  # None: half of what is free where the actor runs

    def setup(self, loaded: LoadedModel) -> None:
        self.sites = [s for s in loaded.sites if self.layers is None or s.layer in self.layers]

    def __call__(self, loaded: LoadedModel, examples: list[Example]) -> dict:
        run = RunOptions(batch_size=len(examples), memory_limit=self.memory_limit)
        activations = capture_heads(loaded, examples, self.encoding, run, sites=self.sites)
        tokens = activations.image_tokens or [-1] * len(examples)
        flat = torch.cat([block.flatten(1) for block in activations.blocks], dim=1).numpy()
        return {"activations": flat, "image_tokens": np.asarray(tokens, dtype=np.int64)}

    def empty(self, n: int) -> dict:
        return {"activations": np.zeros((n, 0), dtype=np.float32), "image_tokens": np.full(n, -1, dtype=np.int64)}


@dataclass
class RayCapture:
    activations: HeadActivations
    model_id: str
    revision: str
    model_layout: HeadLayout  # every head of the model, as a saved classifier's manifest checks it
    n_layers: int  # all decoder layers, as LoadedModel counts them
    worker_pids: set[int]  # the processes that captured the rows


def run_on_ray(options: RayOptions, spec: ModelSpec, task, rows: list[dict], batch_size: int) -> tuple[list[dict], dict, set[int]]:
    """`task` over the rows (`example_row`) in an actor pool: the output rows in order, the model's
    description (id, revision, layers, layout) and the worker process ids."""
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1; got {batch_size}")
    ray = connect(options.address)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    resources = ray.cluster_resources()  # a call to the cluster's control store
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    actors = options.actors or (gpus if gpus else max(1, int(cpus // options.cpus_per_actor)))
    actors = max(1, min(actors, -(-len(rows) // batch_size)))  # no idle actor loading a model for nothing
    dataset = ray.data.from_items(rows).map_batches(
        ModelActor,
        fn_constructor_kwargs={"spec": spec, "task": task, "threads": int(options.cpus_per_actor)},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=options.cpus_per_actor,
        num_gpus=1 if gpus else 0,
    )
    out = dataset.take_all()
    failed = next((str(row["error"]) for row in out if row["error"]), None)
    if failed:
        raise _user_error(failed)
    if [int(row["index"]) for row in out] != list(range(len(rows))):
        raise RuntimeError("Ray returned the examples out of order although preserve_order was set")
    return out, json.loads(out[0]["model"]), {int(row["pid"]) for row in out}


def capture_on_ray(
    options: RayOptions,
    spec: ModelSpec,
    examples: list[Example],
    encoding: Encoding | None = None,
    *,
    layers: list[int] | None = None,
    batch_size: int = 8,
    memory_limit: int | None = None,
) -> RayCapture:
    """`capture_heads` on a Ray cluster (see the module's doc), every actor reading the examples as
    `encoding` says; `layers` limits the capture as prediction does."""
    if not examples:
        raise DataError("no examples to capture")
    encoding = encoding or Encoding()
    rows = [example_row(i, example, encoding.question) for i, example in enumerate(examples)]
    task = CaptureTask(layers, encoding, memory_limit)
    out, description, pids = run_on_ray(options, spec, task, rows, batch_size)
    return _assemble(out, description, layers, pids)


def layout_of(description: dict) -> HeadLayout:
    """Every head of the model an actor loaded, from its description."""
    return HeadLayout(tuple(LayerBlock(*block) for block in description["layout"]))


def _assemble(out: list[dict], description: dict, layers: list[int] | None, pids: set[int]) -> RayCapture:
    model_layout = layout_of(description)
    layout = model_layout if layers is None else model_layout.restricted_to(layers)
    flat = torch.from_numpy(np.stack([row["activations"] for row in out]))
    sizes = [block.n_heads * block.head_dim for block in layout.blocks]
    blocks = [part.reshape(len(out), b.n_heads, b.head_dim) for part, b in zip(flat.split(sizes, dim=1), layout.blocks)]
    tokens = [int(row["image_tokens"]) for row in out]
    activations = HeadActivations(layout, blocks, None if min(tokens) < 0 else tokens)
    return RayCapture(activations, description["model_id"], description["revision"], model_layout, description["n_layers"], pids)


def _user_error(text: str) -> SAVError:
    """An actor's "Kind: message" as an error of that kind, so the CLI prints its one line."""
    kind, _, message = text.partition(": ")
    return {error.__name__: error for error in (DataError, ModelLoadError, ClassifierFileError)}.get(kind, SAVError)(message)
