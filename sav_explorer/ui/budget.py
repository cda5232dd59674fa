"""The image-token budget on the page: what each family makes of it, the support set's tokens before
extraction, and an estimate of the extraction's time from the cost measured on this model.

    settings, note = page_budget(loaded, 256)          # None (the processor's own) when the family cannot take it
    preview = handlers.token_preview(256, session)     # "Image tokens per example: 64–64 ... Extraction: about 3 s ..."

On a CPU the page asks for 256 tokens per image by default: SmolVLM's own settings make any photo
903 tokens and 25 s. A family that cannot honour a budget (a fixed count above it, LLaVA-NeXT's
grid pinpoints) runs at its processor's own settings, and the page says so.
"""

from __future__ import annotations

import statistics

import torch

from ..data import Example
from ..encoding import Encoding, encode
from ..models import LoadedModel, image_token_id
from ..models.budget import BudgetError, BudgetSettings, budget_settings
from .common import Handlers, md
from .session import MAX_PIXELS_CAP, Session

PREVIEW_EXAMPLES = 64  # support images counted for the preview (the rest are like them)


def default_budget() -> int:
    """256 image tokens per image on a CPU; the processor's own settings (0) where a GPU is present."""
    return 0 if torch.cuda.is_available() else 256


def page_budget(loaded: LoadedModel, requested: float | None) -> tuple[BudgetSettings | None, str]:
    """The settings for a budget asked for on the page, or None with the reason the family runs at its own."""
    budget = int(requested or 0)
    if budget <= 0:
        return None, "the processor's own settings"
    try:
        settings = budget_settings(loaded, budget)
    except BudgetError as reason:
        return None, f"the processor's own settings ({reason})"
    return settings, f"a budget of {budget} image tokens each ({settings.note})"


def status_budget(settings: BudgetSettings | None, how: str) -> str:
    """`how` as a status line says it: why a family cannot honour a budget is said once, beside the budget
    control (`token_preview`), not again in the status of every run."""
    if settings is not None and settings.note.startswith("not applicable"):
        return f"the model's fixed {settings.ceiling} tokens each"
    return how


class BudgetHandlers(Handlers):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seconds_per_token: dict = {}  # measured on each extraction, per model key

    def record_cost(self, session: Session, seconds: float, tokens: list[int] | None) -> None:
        if tokens and sum(tokens):
            self.seconds_per_token[session.model_key] = seconds / sum(tokens)

    def token_preview(self, requested: float, session: Session | None, max_pixels: float | None = None) -> str:
        """The support set's image tokens under the budget and pixel cap, as extraction will read them
        (`encode`, the processor alone: no model call)."""
        session = self.session(session)
        key = session.model_key
        if not session.support:
            return ""
        if key not in self.registry:
            return "Image tokens are counted here once the model is loaded (press *Load model* or *Extract heads*)."
        loaded = self.registry.get(key)
        settings, how = page_budget(loaded, requested)
        if image_token_id(loaded) is None:
            return f"Images: {md(how)}."
        pixels = min(MAX_PIXELS_CAP, max(64, int(max_pixels))) if max_pixels else MAX_PIXELS_CAP
        encoding = Encoding(question=session.question or "?", max_pixels=pixels, max_image_tokens=settings.budget if settings else None)
        counts = []
        sample = session.support[:PREVIEW_EXAMPLES]
        for start in range(0, len(sample), 8):
            batch = [Example(e.images, e.question) for e in sample[start : start + 8]]
            counts += encode(loaded, batch, encoding).image_tokens
        total = statistics.fmean(counts) * len(session.support)
        cost = self.seconds_per_token.get(key)
        estimate = (
            f" Extraction: about {max(1, round(total * cost))} s at the {1000 * cost:.2f} ms per image token measured on this model."
            if cost
            else " The time per image token is measured on the first extraction."
        )
        return (
            f"Image tokens per example: {min(counts)}–{max(counts)} (mean {statistics.fmean(counts):.0f}), {md(how)}; "
            f"{total:,.0f} for the whole support set.{estimate}"
        )
