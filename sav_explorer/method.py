"""The Sparse Attention Vector method as pure tensor functions: no model, no device, no printing.

    sims = cosine_to_means(acts, class_means(acts, labels, n_classes))   # (n, heads, classes)
    selected = select_heads(head_scores(sims, labels), k=20)
    predicted, votes = vote(sims, selected)

Shapes: `acts` (n_examples, n_heads, head_dim) for one head size; heads of different sizes are
handled one block at a time and their similarities concatenated along the head axis, since
everything after `cosine_to_means` only needs (n_examples, n_heads, n_classes).
Labels are int64 indices into the sorted class list.
"""

from __future__ import annotations

from typing import Literal

import torch

from .checks import check_choice, check_k

TieBreak = Literal["similarity", "rank"]
Scoring = Literal["in-sample", "loo"]
HeadOrder = Literal["layer-head", "margin", "official"]  # order of heads within a tie of scores (see `select_heads`)


def class_means(acts: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Mean activation per class and head: (n_classes, n_heads, head_dim)."""
    sums = torch.zeros((n_classes, *acts.shape[1:]), dtype=acts.dtype).index_add_(0, labels, acts)
    counts = torch.bincount(labels, minlength=n_classes).to(acts.dtype)
    return sums / counts.clamp(min=1).view(-1, *([1] * (acts.dim() - 1)))


# Cosines, and margins in the "margin" head order, are compared to this many decimals. A head whose
# output hardly depends on the image is as near to every class mean, up to float noise (about 1e-8)
# that one arithmetic (batch, device, a refit without one example) draws differently from the next;
# rounded, its classes tie (argmax: the first class) and its margin is 0, the same way every time.
COMPARED_DECIMALS = 6


def _to_decimals(values: torch.Tensor, decimals: int) -> torch.Tensor:
    """Rounded in float32 and cast back: in bfloat16 or float16 the value is already coarser, and stays."""
    return torch.round(values.float(), decimals=decimals).to(values.dtype)


def cosine_to_means(acts: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every example's head vector to every class mean, to COMPARED_DECIMALS:
    (n, n_heads, n_classes)."""
    a = torch.nn.functional.normalize(acts, dim=-1)  # (n, heads, dim)
    m = torch.nn.functional.normalize(means, dim=-1)  # (classes, heads, dim)
    return _to_decimals(torch.einsum("nhd,chd->nhc", a, m), COMPARED_DECIMALS)


def leave_one_out_cosine(acts: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Like `cosine_to_means`, but each example's own class mean leaves the example out.

    An example that is alone in its class has no such mean: its similarity to its own class is
    -inf, so it can never be counted as right. Returns (n, n_heads, n_classes).
    """
    sums = torch.zeros((n_classes, *acts.shape[1:]), dtype=acts.dtype).index_add_(0, labels, acts)
    counts = torch.bincount(labels, minlength=n_classes).to(acts.dtype)
    sims = cosine_to_means(acts, sums / counts.clamp(min=1).view(-1, 1, 1))
    own_sum = sums[labels] - acts  # (n, heads, dim): class sum without the example
    own_count = (counts[labels] - 1).view(-1, 1, 1)
    own_mean = own_sum / own_count.clamp(min=1)
    own_sim = _to_decimals(torch.nn.functional.cosine_similarity(acts, own_mean, dim=-1), COMPARED_DECIMALS)  # (n, heads)
    own_sim = torch.where(own_count.view(-1, 1) > 0, own_sim, torch.tensor(float("-inf"), dtype=acts.dtype))
    sims[torch.arange(len(labels)), :, labels] = own_sim
    return sims


def head_scores(sims: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per head, the fraction of examples whose nearest class mean is their own class: (n_heads,)."""
    return (sims.argmax(-1) == labels.view(-1, 1)).float().mean(0)


def head_margins(sims: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per head, the mean over examples of the cosine to the example's own class mean minus the
    cosine to the nearest other class mean: how clearly a head separates, where scores only count
    right and wrong. (n_heads,); 0 with a single class."""
    own = sims.gather(-1, labels.view(-1, 1, 1).expand(-1, sims.shape[1], 1)).squeeze(-1)  # (n, heads)
    if sims.shape[-1] < 2:
        return torch.zeros(sims.shape[1], dtype=sims.dtype)
    others = sims.scatter(-1, labels.view(-1, 1, 1).expand(-1, sims.shape[1], 1), float("-inf")).max(-1).values
    return (own - others).mean(0)


def select_heads(scores: torch.Tensor, k: int, order: HeadOrder = "layer-head", margins: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of the k best heads, score descending. Within a tie of scores, by `order`:
    "layer-head" (index ascending: early layers first), "official" (index descending, as the
    official code's sort leaves them) or "margin" (`margins` to six decimals descending, then index
    ascending). With few examples scores are coarse fractions and many heads tie, so the order matters."""
    check_k(k, len(scores))
    check_choice(order, HeadOrder, "head order")
    index = torch.arange(len(scores))
    if order == "official":
        index = index.flip(0)
    elif order == "margin":
        if margins is None:
            raise ValueError("the margin order needs the heads' margins")
        index = torch.sort(-_to_decimals(margins, COMPARED_DECIMALS), stable=True).indices  # equal to COMPARED_DECIMALS: a tie
    ranked = torch.sort(-scores[index], stable=True).indices  # a stable sort keeps the tie order of `index`
    return index[ranked][:k]


def vote(sims: torch.Tensor, selected: torch.Tensor, tie_break: TieBreak = "similarity") -> tuple[torch.Tensor, torch.Tensor]:
    """Each selected head votes for its nearest class mean; the most votes win.

    `sims` is (n, n_heads, n_classes); `selected` lists head indices best-ranked first.
    Ties between classes with equal votes go, with "similarity", to the tied class with the
    highest cosine summed over the selected heads, and with "rank" (the official code's rule) to
    the tied class voted for by the best-ranked head. Returns (predictions (n,), votes (n, n_classes)).
    """
    chosen = sims[:, selected]  # (n, k, classes)
    head_votes = chosen.argmax(-1)  # (n, k)
    n_classes = sims.shape[-1]
    votes = torch.nn.functional.one_hot(head_votes, n_classes).sum(1)  # (n, classes)
    tied = votes == votes.max(-1, keepdim=True).values  # (n, classes)
    if tie_break == "similarity":
        summed = chosen.sum(1).masked_fill(~tied, float("-inf"))
        return summed.argmax(-1), votes
    if tie_break == "rank":
        # The first head (in rank order) whose vote is one of the tied classes decides.
        vote_is_tied = tied.gather(1, head_votes)  # (n, k)
        first = vote_is_tied.float().argmax(-1)  # (n,)
        return head_votes.gather(1, first.view(-1, 1)).squeeze(1), votes
    raise ValueError(check_choice(tie_break, TieBreak, "tie break"))  # check_choice raises first
