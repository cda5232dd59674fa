"""What each head writes towards the answer: direct logit attribution, and the logit lens.

    report = attribute(loaded, queries, clf.classes_, clf.encoding)     # AttributionReport
    report.dla[(2, 0)]["red"]       # mean over red queries of head 2:0's push for red over the others
    report.logit_lens[3]["red"]     # the mean probability of red's first token read off layer 3
    report.decomposition_error      # how far the parts' sum is from the model's own logits

At the last input position the final residual stream is a sum: the embeddings, and every layer's
attention output and MLP output. An attention output is its heads' slices through the output
projection, plus the projection's bias. The final norm, with the scale of the actual final residual
frozen (`models.residual`), is linear; the unembedding row of a class's first answer token then
turns each part into its share of that class's logit, and the shares add up to the logit. A head's
direct logit attribution is its share for the true class minus the mean of its shares for the
others, averaged over each class's queries. It measures what a head writes straight into the
answer, not what it does through later layers: set beside SAV's accuracy and patching, it tells
heads that carry the answer from heads that only make it readable.

Families whose residual stream is not that plain sum are refused by name: the check is run on
every layer of every batch (Gemma 3 and Gemma 4 normalise each attention output before adding it;
Mllama gates its cross-attention layers). The logit lens reads each layer's residual at the last
position through the final norm and the unembedding, as if the model stopped there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .causal import label_tokens
from .data import Example
from .encoding import Encoding, RunOptions, batches
from .errors import DataError
from .heads import Head
from .models import LoadedModel, decoder_layers
from .models.residual import frozen_norm_scale, unembedding
from .trace import Trace

TOLERANCE = 1e-3  # relative: a layer whose update differs more from attention + MLP is not a plain sum


@dataclass
class AttributionReport:
    classes: list[str]
    heads: list[Head]
    dla: dict[Head, dict[str, float]]  # per head: per true class, mean of (true-class share − mean of the others')
    logit_lens: list[tuple[int, dict[str, float]]]  # per layer: mean probability of each class's first token
    true_class_lens: list[float]  # per layer: mean probability of the query's own class's first token
    decomposition_error: float  # max |sum of the parts − the model's logit| over queries and classes
    counts: dict[str, int]  # queries per class

    def head_scores(self) -> torch.Tensor:
        """(n_heads,): each head's attribution averaged over the classes that have queries, in layout order."""
        present = [c for c in self.classes if self.counts.get(c)]
        return torch.tensor([sum(self.dla[h][c] for c in present) / max(1, len(present)) for h in self.heads])

    def to_json(self) -> dict:
        return {
            "classes": self.classes,
            "heads": [{"layer": layer, "head": head, "dla": self.dla[(layer, head)]} for layer, head in self.heads],
            "logit_lens": [
                {"layer": layer, "probabilities": probabilities, "true_class": true}
                for (layer, probabilities), true in zip(self.logit_lens, self.true_class_lens)
            ],
            "decomposition_error": self.decomposition_error,
        }


@dataclass
class LogitDecomposition:
    """One batch's logits for chosen tokens at each row's last position, taken apart."""

    heads: torch.Tensor  # (batch, n_heads, n_tokens): each head's direct share, heads in layout order
    rest: torch.Tensor  # (batch, n_tokens): embeddings, output-projection biases, MLPs, unsplit attention, the head's bias
    logits: torch.Tensor  # (batch, n_tokens): the model's own (before any softcapping)
    residuals: list[torch.Tensor]  # per layer, (batch, hidden): the residual after it, for the logit lens

    @property
    def error(self) -> float:
        return float((self.heads.sum(1) + self.rest - self.logits).abs().max())


@torch.no_grad()
def decompose(loaded: LoadedModel, batch, tokens: Sequence[int]) -> LogitDecomposition:
    """The logits of `tokens` at each row's last position as the sum of their parts (see the module's
    doc); the parts are read separately and added up independently of the residual they came from."""
    final = unembedding(loaded.model)
    tokens = torch.as_tensor(list(tokens))
    rows = final.weight[tokens].detach().float().cpu()  # (tokens, hidden)
    n_layers = len(decoder_layers(loaded.model))
    parts = _residual_parts(loaded, batch, n_layers)
    scale = frozen_norm_scale(final.norm, parts["residual"][n_layers - 1])  # (batch, hidden)
    head_parts = _head_parts(loaded, parts)  # (batch, n_heads, hidden)
    rest = parts["input"].clone()
    site_layers = {site.layer: site for site in loaded.sites}
    for layer in range(n_layers):
        site = site_layers.get(layer)
        if site is None:
            rest += parts["attention"][layer]  # attention without heads to split (linear attention)
        elif site.module.bias is not None:
            rest += site.module.bias.detach().float().cpu()
        rest += parts["mlp"][layer]
    rest_logits = (scale * rest) @ rows.T
    if final.bias is not None:
        rest_logits += final.bias[tokens].detach().float().cpu()
    actual = parts["logits"][:, tokens]
    if final.softcap:
        actual = final.softcap * torch.atanh((actual / final.softcap).clamp(-1 + 1e-7, 1 - 1e-7))
    shares = torch.einsum("bnh,bh,th->bnt", head_parts, scale, rows)
    return LogitDecomposition(shares, rest_logits, actual, [parts["residual"][layer] for layer in range(n_layers)])


@torch.no_grad()
def attribute(
    loaded: LoadedModel, queries: Sequence[Example], classes: Sequence[str], encoding: Encoding | None = None, run: RunOptions | None = None
) -> AttributionReport:
    """Direct logit attribution of every head, and the logit lens, over labelled queries (see the module's doc)."""
    classes = list(classes)
    if len(classes) < 2:
        raise DataError("attribution compares a class with the others: it needs two classes or more")
    unknown = [q.label for q in queries if q.label not in classes]
    if unknown:
        raise DataError(f"every query needs one of the classes as its label; got {unknown[0]!r}")
    if not queries:
        raise DataError("attribution needs labelled queries")
    encoding = encoding or Encoding()
    tokens = label_tokens(loaded, queries[0], classes, encoding)
    final = unembedding(loaded.model)
    heads = loaded.layout.heads
    n_layers = len(decoder_layers(loaded.model))
    sums = torch.zeros(len(heads), len(classes))  # per head, per true class
    lens = torch.zeros(n_layers, len(classes))
    lens_true = torch.zeros(n_layers)
    counts = torch.zeros(len(classes))
    error = 0.0
    for batch in batches(loaded, queries, encoding, run):
        parts = decompose(loaded, batch, tokens)
        error = max(error, parts.error)
        truth = torch.tensor([classes.index(e.label) for e in batch.examples])
        counts += torch.bincount(truth, minlength=len(classes)).float()
        shares = parts.heads  # (batch, heads, classes)
        others = (shares.sum(-1, keepdim=True) - shares) / (len(classes) - 1)
        push = (shares - others).gather(-1, truth.view(-1, 1, 1).expand(-1, len(heads), 1)).squeeze(-1)  # (batch, heads)
        sums.index_add_(1, truth, push.T)
        for layer, residual in enumerate(parts.residuals):
            probabilities = _lens_probabilities(final, residual)[:, tokens]  # (batch, classes)
            lens[layer] += probabilities.sum(0)
            lens_true[layer] += probabilities.gather(1, truth.view(-1, 1)).sum()
    n = counts.clamp(min=1)
    dla = {head: {c: round(float(sums[i, j] / n[j]), 6) for j, c in enumerate(classes) if counts[j]} for i, head in enumerate(heads)}
    total = counts.sum().clamp(min=1)
    logit_lens = [(layer, {c: round(float(lens[layer, j] / total), 6) for j, c in enumerate(classes)}) for layer in range(n_layers)]
    true_lens = [round(float(lens_true[layer] / total), 6) for layer in range(n_layers)]
    return AttributionReport(classes, heads, dla, logit_lens, true_lens, error, {c: int(counts[j]) for j, c in enumerate(classes)})


def _lens_probabilities(final, residual: torch.Tensor) -> torch.Tensor:
    """(batch, vocab): a residual read as if the model stopped there: final norm, unembedding, softmax."""
    weight = final.weight.detach()
    logits = final.norm(residual.to(weight.device, weight.dtype)).float() @ weight.float().T
    if final.bias is not None:
        logits = logits + final.bias.float()
    if final.softcap:
        logits = final.softcap * torch.tanh(logits / final.softcap)
    return logits.softmax(-1).cpu()


def _residual_parts(loaded: LoadedModel, batch, n_layers: int) -> dict:
    """At each row's last position: the embeddings, each layer's attention and MLP outputs, its heads'
    outputs, the residual after it and the model's own logits, in float32; checked to add up layer by layer."""
    last = batch.last
    parts: dict = {"attention": {}, "mlp": {}, "residual": {}, "heads": {}, "input": None, "logits": None}

    def keep(kind: str, layer: int | None):
        def read(hidden: torch.Tensor) -> None:
            at = hidden[torch.arange(hidden.shape[0]), last.to(hidden.device)].detach().float().cpu()
            if layer is None:
                parts[kind] = at
            else:
                parts[kind][layer] = at

        return read

    trace = Trace(loaded).on_layer_input(0, keep("input", None))
    site_layers = {site.layer for site in loaded.sites}
    for layer in range(n_layers):
        trace.on_attention_output(layer, keep("attention", layer))
        trace.on_mlp(layer, keep("mlp", layer))
        trace.on_residual(layer, keep("residual", layer))
        if layer in site_layers:
            trace.on_heads(layer, keep("heads", layer))
    positions = torch.unique(last)  # the logits of the last positions only, whichever side the batch is padded
    try:
        with trace:
            logits = loaded.model(**batch.model_inputs(), use_cache=False, logits_to_keep=positions.to(loaded.input_device)).logits
    except DataError as error:  # a layer without the modules a plain residual sum needs (linear attention)
        raise DataError(f"{type(loaded.model).__name__}: {error}: direct logit attribution is not supported for it") from None
    column = torch.searchsorted(positions, last)
    parts["logits"] = logits[torch.arange(logits.shape[0]), column.to(logits.device)].detach().float().cpu()
    previous = parts["input"]
    for layer in range(n_layers):
        update = parts["residual"][layer] - previous
        added = parts["attention"][layer] + parts["mlp"][layer]
        if (update - added).norm() > TOLERANCE * max(1.0, float(update.norm())):
            raise DataError(
                f"{type(loaded.model).__name__}: layer {layer}'s residual update is not its attention output plus its MLP output "
                "(the family normalises, gates or scales them before adding): direct logit attribution is not supported for it"
            )
        previous = parts["residual"][layer]
    return parts


def _head_parts(loaded: LoadedModel, parts: dict) -> torch.Tensor:
    """(batch, n_heads, hidden): each head's slice through its layer's output projection."""
    pieces = []
    for site in loaded.sites:
        weight = site.module.weight.detach().float().cpu()  # (hidden, n_heads * head_dim)
        heads = parts["heads"][site.layer].view(-1, site.n_heads, site.head_dim)
        pieces.append(torch.einsum("bnd,hnd->bnh", heads, weight.view(weight.shape[0], site.n_heads, site.head_dim)))
    return torch.cat(pieces, 1)
