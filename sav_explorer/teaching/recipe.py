"""The training recipe's settings: how often each kind of question is drawn in each stage, the
attributes the tower is taught, and `TrainConfig`, whose fields are `train`'s command-line options.

Kept in one place, apart from the code that runs the stages (`stages`, `train`), so that a change
to the recipe reads as one.
"""

from __future__ import annotations

from dataclasses import dataclass

from .drawn import DrawingHabits

# How often each kind of question is drawn: first questions about one attribute only (with every
# kind mixed in from the start, the decoder of an earlier run was still at chance on colour and
# shape after 1,000 steps; on colour alone it learnt in 100), then every kind, then a mix heavy
# in the kinds that bind and compare objects.
SINGLE_WEIGHTS = {
    "colour": 1.0,
    "shape": 1.0,
    "size": 0.5,
    "position": 0.5,
    "count": 1.0,
    "presence": 0.0,
    "relation": 0.0,
    "describe": 0.0,
}
READING_WEIGHTS = {
    "colour": 1.0,
    "shape": 1.0,
    "size": 1.0,
    "position": 1.0,
    "count": 1.5,
    "presence": 1.5,
    "relation": 1.5,
    "describe": 2.0,
}
BINDING_WEIGHTS = {
    "colour": 0.5,
    "shape": 0.5,
    "size": 0.5,
    "position": 0.5,
    "count": 0.5,
    "presence": 2.0,
    "relation": 2.0,
    "describe": 3.0,
}
# The last stage, on drawings as well as renders: shape is what drawings got wrong, presence
# what the model answered worst.
DRAWING_WEIGHTS = {
    "colour": 1.0,
    "shape": 1.5,
    "size": 0.5,
    "position": 0.5,
    "count": 1.5,
    "presence": 2.5,
    "relation": 1.0,
    "describe": 3.0,
}
# The fifth stage re-teaches presence (see `pointer_targets`) and keeps every other kind in
# practice, descriptions most (with descriptions at 2 and count at 1.5 the description lost a
# little more: on 1,000, 6 object counts and 38 attributes wrong against 5 and 30).
CHECKING_WEIGHTS = {
    "colour": 0.5,
    "shape": 0.5,
    "size": 0.5,
    "position": 0.5,
    "count": 2.0,
    "presence": 3.0,
    "relation": 1.0,
    "describe": 4.0,
}
# The sixth stage's second part, the decoder alone on questions about big objects as well: shape
# most (a big cross was read as a square), the kinds that name a shape, and every other kind kept
# in practice in stage 5's proportions.
REREADING_WEIGHTS = {
    "colour": 1.0,
    "shape": 2.0,
    "size": 0.75,
    "position": 0.5,
    "count": 2.0,
    "presence": 3.0,
    "relation": 1.0,
    "describe": 4.0,
}
# Per-patch attributes the tower is taught: what an object is, and where it is (side of the
# image, place counting from the left).
SEEING = ("colour", "shape", "size")
PLACING = ("side", "rank")


@dataclass
class TrainConfig:
    seed: int = 0
    vision_steps: int = 1500  # stage 1: vision tower on per-patch attributes
    vision_batch: int = 64
    vision_lr: float = 2e-3
    aligning_steps: int = 200  # stage 1, then the projector alone on the same probes
    reading_steps: int = 800  # stage 2, first questions about one attribute: projector + decoder, tower frozen
    qa_steps: int = 2200  # stage 2, then every kind of question
    binding_steps: int = 2500  # stage 3: everything, binding-heavy questions, the probes kept on
    redrawing_steps: int = 1000  # stage 4: the tower on drawings as well as renders, held to what it saw of renders
    drawing_steps: int = 3000  # stage 4, then everything on questions about drawings and renders
    checking_steps: int = 1500  # stage 5: the decoder alone, presence looked up one attribute per pointer head
    enlarging_steps: int = 500  # stage 6: the tower on objects drawn big, held to what it read of everything else
    rereading_steps: int = 1200  # stage 6, then the decoder alone on questions about big objects as well
    big_share: float = 0.4  # of the images of stage 6's first part, one object drawn big
    rereading_big_share: float = 0.4  # of the questions about one object in stage 6's second part, one drawn big
    enlarging_lr: float = 6e-4  # the tower in stage 6's first part
    enlarging_reads: float = 0.0  # the decoder's reading of a big object held to its reading of the object at the world's large
    reads_world_size: float = 0.0  # of the objects held so, those drawn at the world's sizes as in stage 4, not big (objects of their own)
    hand_strokes: float = 0.0  # of stage 6's big drawings (both parts), those stroked by hand (`drawn.hand_style`)
    hand_world_size: float = 0.0  # of stage 6's drawings at the world's sizes (both parts), those stroked by hand
    dense_hatching: float = 0.0  # of stage 6's hatched fills stroked by hand, those hatched densely (`drawn.DENSE_HATCH_GAP`)
    near_large: float = 0.0  # of stage 6's big objects, those drawn near the world's large (`drawn.NEAR_LARGE_HALF_WIDTH`)
    ink_variety: float = 0.0  # of stage 6's drawings (big and at the world's sizes), those in inks far from the six (`drawn.inked`)
    between_sizes: float = 0.0  # of stage 6's big objects, those drawn between the world's small and large (`drawn.BETWEEN_HALF_WIDTH`)
    world_arms: float = 0.0  # of stage 6's drawings at the world's sizes stroked by hand, those with a big cross's arms (`drawn.BIG_ARMS`)
    fine_pens: float = 0.0  # of stage 6's drawings at the world's sizes stroked by hand, those drawn with a fine pen (`drawn.FINE_PEN`)
    taught_world_drawings: float = 0.0  # of stage 6's tower's images not big, drawn by hand and taught, not held (`stages.enlarging_batch`)
    enlarging_anchor: float = 3.0  # the anchor's weight in stage 6: big shapes pull the tower harder than stage 4's drawings
    rereading_lr: float = 3e-4  # the decoder in stage 6's second part
    rereading_presence: float = REREADING_WEIGHTS["presence"]  # presence questions' weight there (heavier keeps presence)
    drawn_share: float = 0.5  # of stage 4's and 5's images, drawn in the style of `drawn`
    redrawing_lr: float = 6e-4  # the tower in stage 4's first part
    drawing_lr: float = 3e-4  # the decoder in stage 4 (tower and projector at finetune_lr)
    checking_lr: float = 3e-4  # the decoder in stage 5
    checking_pointers: str = "attributes"  # or "object", as stages 2 to 4 (presence 90.8 % against 94.0 % after 400 steps)
    word_head: int = 4  # of WORD_LAYER: taught in stage 5 to bring a presence question's shape word to the answer
    same_colour: float = 0.6  # of stage 5's absent-presence questions, those naming a colour in the scene
    anchor_weight: float = 1.0  # keeps the tower's reading of renders while it learns drawings
    batch: int = 32
    lr: float = 2e-3
    finetune_lr: float = 3e-4  # the tower and projector in stage 3
    binding_lr: float = 1e-3  # projector, decoder and probes in stage 3
    probe_weight: float = 0.3  # the probes' loss, added to the answers' in stage 3
    pointer_weight: float = 0.5  # the pointer heads' loss, added to the answers' in stages 2 and 3
    warmup: int = 100
    weight_decay: float = 0.01
    threads: int = 2

    def rereading_weights(self) -> dict[str, float]:
        """The question kinds' weights in stage 6's second part, presence's as configured."""
        return REREADING_WEIGHTS | {"presence": self.rereading_presence}

    def drawing_habits(self) -> DrawingHabits:
        """How stage 6 draws, as one value for every loop that draws (`drawn.DrawingHabits`)."""
        return DrawingHabits(
            hand_big=self.hand_strokes,
            hand_world=self.hand_world_size,
            dense_hatching=self.dense_hatching,
            near_large=self.near_large,
            ink_variety=self.ink_variety,
            between_sizes=self.between_sizes,
            world_arms=self.world_arms,
            fine_pens=self.fine_pens,
        )
