"""What the model is told in training besides the answers: where things are and where to look.

Per patch and per object, what the vision tower's probes should read (`patch_targets`,
`stack_targets`), and for the decoder where its pointer heads should look (`pointer_targets`) and
where the word pointer should look (`word_targets`). Plain functions of a scene or a batch, kept
apart from the modules that use them (`probes`, `stages`) so that tests can check them directly.
"""

from __future__ import annotations

import torch
from PIL import Image

from .batches import QABatch, index_map
from .build import PATCH_SIZE
from .shapes import COLOURS, IMAGE_SIZE, MAX_OBJECTS, SHAPES, SIZES, Scene

# Decoder heads taught where to look (see `pointer_targets`): heads 0 and 1 of the third layer,
# so that the two layers below can bring the question's words to the place that asks.
POINTER_LAYER = 2
POINTER_HEADS = 2
WORD_LAYER = 1


def patch_targets(scene: Scene, objects: Image.Image | None = None) -> dict[str, torch.Tensor]:
    """Training targets for the vision tower, from the objects' pixel-exact masks (`objects`, the
    picture's index map; the world's own render when None).

    Per patch (n_patches,): colour, shape, size, side (left/right half) and rank (place counting
    from the left) of the object covering most of it, as classes from 1 (0 = background). Per
    object slot (MAX_OBJECTS,): the same attributes (-100 for empty slots), with
    `object_weights` (MAX_OBJECTS, n_patches), the share of the object's pixels in each patch,
    to pool its tokens. `count` is the object count minus one.
    """
    objects = objects if objects is not None else index_map(scene)
    pixels = torch.tensor(bytearray(objects.tobytes()), dtype=torch.int64).view(IMAGE_SIZE, IMAGE_SIZE)
    grid = IMAGE_SIZE // PATCH_SIZE
    patches = pixels.view(grid, PATCH_SIZE, grid, PATCH_SIZE).permute(0, 2, 1, 3).reshape(grid * grid, -1)  # (n_patches, pixels)
    counts = torch.stack([(patches == i + 1).sum(1) for i in range(MAX_OBJECTS)], 1).float()  # (n_patches, MAX_OBJECTS)
    owner = counts.argmax(1)
    covered = counts.max(1).values >= 8  # a patch needs a fair share of an object to count as "on" it
    n = len(scene.objects)
    pad = [-100] * (MAX_OBJECTS - n)
    order = scene.left_to_right()
    per_object = {
        "colour": [1 + list(COLOURS).index(o.colour) for o in scene.objects],
        "shape": [1 + SHAPES.index(o.shape) for o in scene.objects],
        "size": [1 + list(SIZES).index(o.size) for o in scene.objects],
        "side": [1 + (o.x >= IMAGE_SIZE / 2) for o in scene.objects],
        "rank": [1 + order.index(o) for o in scene.objects],
    }
    targets = {"object_weights": counts.T / counts.T.sum(1, keepdim=True).clamp(min=1), "count": torch.tensor(n - 1)}
    for name, ids in per_object.items():
        ids = torch.tensor(ids + pad)
        targets[name] = torch.where(covered, ids[owner].clamp(min=0), 0)
        targets[f"object_{name}"] = ids
    return targets


def stack_targets(scenes: list[Scene], index_maps: list[Image.Image] | None = None) -> dict[str, torch.Tensor]:
    per_scene = [patch_targets(s, m) for s, m in zip(scenes, index_maps or [None] * len(scenes))]
    return {k: torch.stack([t[k] for t in per_scene]) for k in per_scene[0]}


def pointer_targets(
    batch: QABatch, object_weights: torch.Tensor, image_token_id: int, presence: str = "object"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the pointer heads should look, per row and position: (batch, POINTER_HEADS, seq, seq)
    distributions over the sequence and a (batch, POINTER_HEADS, seq) mask of the supervised places.

    Head 0 looks at the object the answer is about: the lone object, every object for a count
    (with a share of its attention that grows with the count, the rest on the prompt's first token),
    the first object of a relation and, while a description is written, the object being
    described. Head 1 looks at a relation's second object. For a presence question, `presence`
    says where: "object", head 0 at the object named (the first token of the prompt when there is
    none), as stages 2 to 4 teach; "attributes", head 0 at every object of the colour named and
    head 1 at every object of the shape named, as stage 5 teaches. Looking for the object named
    asks one head for a colour *and* a shape at once: the model trained so answered yes to every
    object of the right colour, whatever its shape. One attribute per head is a plain look-up,
    and the layers above check the other attribute of what was found.
    """
    ids = batch.inputs["input_ids"]
    size, seq = ids.shape
    targets = torch.zeros(size, POINTER_HEADS, seq, seq)
    mask = torch.zeros(size, POINTER_HEADS, seq, dtype=torch.bool)
    for row, (kind, question, scene) in enumerate(zip(batch.kinds, batch.questions, batch.scenes)):
        image = (ids[row] == image_token_id).nonzero().squeeze(1)  # the patches, in raster order
        first_answer = int((batch.inputs["labels"][row] != -100).nonzero()[0])
        sink = int(batch.inputs["attention_mask"][row].nonzero()[0])
        objects = scene.objects
        words = question.split()

        def look(head: int, position: int, chosen: list[int], share: float = 1.0, row=row, image=image, sink=sink) -> None:
            """`share` of the attention on the chosen objects, each object alike; the rest on the sink."""
            mask[row, head, position] = True
            if chosen:
                weights = object_weights[row, chosen].sum(0)
                targets[row, head, position, image] = share * weights / weights.sum()
            targets[row, head, position, sink] += 1.0 - share if chosen else 1.0

        if kind in ("colour", "shape", "size", "position"):
            look(0, first_answer - 1, [0])
        elif kind == "count":
            # How many is how much attention lands on objects, whatever their size. Spread over
            # all objects, a head reads the same for one object as for four, and the heads SAV
            # picked for count read the covered area instead: small objects counted fewer.
            look(0, first_answer - 1, list(range(len(objects))), share=len(objects) / (MAX_OBJECTS + 1))
        elif kind == "presence" and presence == "attributes":
            colour, shape = words[3], words[4]
            look(0, first_answer - 1, [i for i, o in enumerate(objects) if o.colour == colour])
            look(1, first_answer - 1, [i for i, o in enumerate(objects) if o.shape == shape])
        elif kind == "presence":
            colour, shape = words[3], words[4]
            look(0, first_answer - 1, [i for i, o in enumerate(objects) if o.colour == colour and o.shape == shape])
        elif kind == "relation":
            colours = [o.colour for o in objects]
            look(0, first_answer - 1, [colours.index(words[2])])
            look(1, first_answer - 1, [colours.index(words[7])])
        elif kind == "describe":
            for place, obj in enumerate(scene.left_to_right()):
                for word in range(3):  # "size colour shape", then a comma
                    look(0, first_answer + 4 * place + word - 1, [objects.index(obj)])
    return targets, mask


def word_targets(batch: QABatch, shape_token_ids: set[int]) -> torch.Tensor:
    """Where the word pointer should look from the place that answers a presence question: the
    question's shape word, per row (-1 for other kinds). Before stage 5 the shape word of a
    presence question never reached the place that answers (a linear probe there read it at 22 to
    53 % over four shapes, the colour word at 100 %), so the model could not check the shape it was
    asked about."""
    ids = batch.inputs["input_ids"]
    places = torch.full((len(ids),), -1)
    for row, kind in enumerate(batch.kinds):
        if kind == "presence":
            first_answer = int((batch.inputs["labels"][row] != -100).nonzero()[0])
            words = [i for i in range(first_answer) if int(ids[row, i]) in shape_token_ids]
            places[row] = words[-1]
    return places
