"""The SAV method on hand-made tensors: exact heads, votes and tie rules."""

import itertools

import pytest
import torch

from sav_explorer import method


def two_class_heads():
    """4 examples (classes 0,0,1,1) x 3 heads x 2 dims.

    Head 0 separates the classes perfectly, head 1 not at all (every vector points the same
    way, so all examples go to class 0: half right), head 2 separates them perfectly too.
    """
    labels = torch.tensor([0, 0, 1, 1])
    acts = torch.tensor(
        [
            [[1.0, 0.1], [1.0, 0.0], [0.9, 0.1]],
            [[1.0, -0.1], [1.0, 0.0], [1.0, 0.2]],
            [[0.1, 1.0], [1.0, 0.0], [0.1, 1.0]],
            [[-0.1, 1.0], [1.0, 0.0], [0.2, 1.0]],
        ]
    )
    return acts, labels


def test_class_means_average_each_class():
    acts, labels = two_class_heads()
    means = method.class_means(acts, labels, 2)
    assert means.shape == (2, 3, 2)
    torch.testing.assert_close(means[0, 0], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(means[1, 2], torch.tensor([0.15, 1.0]))


def test_head_scores_and_selection_are_exact():
    acts, labels = two_class_heads()
    sims = method.cosine_to_means(acts, method.class_means(acts, labels, 2))
    scores = method.head_scores(sims, labels)
    assert scores.tolist() == [1.0, 0.5, 1.0]
    # ties between heads 0 and 2 go to the lower (layer, head) index
    assert method.select_heads(scores, 2).tolist() == [0, 2]
    assert method.select_heads(scores, 3).tolist() == [0, 2, 1]


def test_selection_breaks_ties_by_head_index_not_by_chance():
    scores = torch.tensor([0.5, 0.9, 0.9, 0.5, 0.9])
    assert method.select_heads(scores, 4).tolist() == [1, 2, 4, 0]


def test_the_official_order_puts_the_highest_index_first_within_a_tie():
    scores = torch.tensor([0.5, 0.9, 0.9, 0.5, 0.9])
    assert method.select_heads(scores, 5, "official").tolist() == [4, 2, 1, 3, 0]


def test_the_margin_order_ranks_tied_heads_by_how_clearly_they_separate():
    scores = torch.tensor([0.5, 0.9, 0.9, 0.5, 0.9])
    margins = torch.tensor([0.3, 0.1, 0.4, 0.3, 0.2])
    assert method.select_heads(scores, 5, "margin", margins).tolist() == [2, 4, 1, 0, 3]  # equal margins: index order


def test_a_head_blind_to_the_image_scores_the_same_whatever_its_float_noise():
    """Its output is the same vector for every example, up to noise of a few 1e-8 that another batch
    draws differently: cosines to six decimals make its classes tie, so it is scored (nearest class:
    the first) and votes the same every time, where the raw argmax followed the noise."""
    labels = torch.tensor([0, 0, 1, 1])
    constant = torch.tensor([0.6, -0.8, 0.3])
    scored = []
    for seed in range(4):
        noise = torch.randn(4, 1, 3, generator=torch.Generator().manual_seed(seed)) * 3e-8
        acts = constant + noise
        sims = method.cosine_to_means(acts, method.class_means(acts, labels, 2))
        assert torch.equal(sims, torch.ones(4, 1, 2))
        scored.append(method.head_scores(sims, labels).item())
    assert scored == [0.5] * 4
    distinct = method.cosine_to_means(torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]]), torch.tensor([[[1.0, 0.1]], [[0.1, 1.0]]]))
    assert distinct.argmax(-1).flatten().tolist() == [0, 1]  # real differences still decide


def test_margins_of_float_noise_tie_so_a_head_blind_to_the_image_keeps_its_place_whatever_the_arithmetic():
    """A head whose output hardly depends on the image has a margin of float noise, whose sign one
    arithmetic (batch, device, refit without an example) flips against another: margins equal to six
    decimals tie, and index order places them. Real differences still count."""
    scores = torch.tensor([0.5, 0.5, 0.5, 0.5])
    one_way = torch.tensor([3e-8, -2e-8, 0.2, 0.2000004])
    another = torch.tensor([-3e-8, 2e-8, 0.2, 0.1999996])
    assert method.select_heads(scores, 4, "margin", one_way).tolist() == [2, 3, 0, 1]
    assert method.select_heads(scores, 4, "margin", another).tolist() == [2, 3, 0, 1]
    assert method.select_heads(scores, 4, "margin", torch.tensor([0.0, 2e-6, 0.2, 0.2])).tolist() == [2, 3, 1, 0]


def test_head_margins_are_the_mean_gap_between_the_own_class_and_the_nearest_other():
    sims = torch.tensor(
        [
            [[0.9, 0.1, 0.2], [0.5, 0.6, 0.0]],  # example of class 0: head 0 gap 0.7, head 1 gap -0.1
            [[0.3, 0.8, 0.4], [0.2, 0.3, 0.1]],  # example of class 1: head 0 gap 0.4, head 1 gap 0.1
        ]
    )
    margins = method.head_margins(sims, torch.tensor([0, 1]))
    assert torch.allclose(margins, torch.tensor([0.55, 0.0]))


@pytest.mark.parametrize("k", [0, 6, -1])
def test_select_heads_refuses_k_out_of_range(k):
    with pytest.raises(ValueError, match="k must be between 1 and the number of heads"):
        method.select_heads(torch.ones(5), k)


def test_vote_majority_wins():
    sims = torch.tensor([[[0.9, 0.1], [0.8, 0.3], [0.2, 0.7]]])  # votes: 0, 0, 1
    predicted, votes = method.vote(sims, torch.tensor([0, 1, 2]))
    assert predicted.tolist() == [0]
    assert votes.tolist() == [[2, 1]]


def tied_sims():
    """4 heads, 2 classes, votes 1, 0, 0, 1: a 2-2 tie. Class 0 has the larger summed similarity."""
    return torch.tensor([[[0.1, 0.2], [0.9, 0.1], [0.8, 0.2], [0.3, 0.35]]])


def test_similarity_tie_break_picks_larger_summed_cosine():
    predicted, votes = method.vote(tied_sims(), torch.tensor([0, 1, 2, 3]), "similarity")
    assert votes.tolist() == [[2, 2]]
    assert predicted.tolist() == [0]  # sums: class 0 = 2.1, class 1 = 0.85


def test_rank_tie_break_follows_best_ranked_head():
    sims = tied_sims()
    assert method.vote(sims, torch.tensor([0, 1, 2, 3]), "rank")[0].tolist() == [1]  # head 0 voted 1
    assert method.vote(sims, torch.tensor([1, 0, 2, 3]), "rank")[0].tolist() == [0]  # head 1 voted 0


def test_rank_tie_break_skips_heads_that_voted_for_an_untied_class():
    # 3 classes; votes 2, 0, 1, 0, 1 -> classes 0 and 1 tie at 2; head 0 (class 2) is not tied.
    sims = torch.tensor([[[0, 0, 1.0], [1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0], [0, 1.0, 0]]])
    assert method.vote(sims, torch.arange(5), "rank")[0].tolist() == [0]  # head 1 is the first with a tied vote


def test_leave_one_out_cosine_matches_brute_force():
    torch.manual_seed(0)
    acts = torch.randn(9, 4, 6)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    fast = method.leave_one_out_cosine(acts, labels, 3)
    for i in range(9):
        keep = torch.arange(9) != i
        means = method.class_means(acts[keep], labels[keep], 3)
        expected = method.cosine_to_means(acts[i : i + 1], means)[0]
        torch.testing.assert_close(fast[i], expected, rtol=1e-5, atol=1e-6)


def test_leave_one_out_singleton_class_can_never_be_right():
    torch.manual_seed(4)
    acts = torch.randn(3, 2, 4)
    labels = torch.tensor([0, 0, 1])
    sims = method.leave_one_out_cosine(acts, labels, 2)
    assert torch.isinf(sims[2, :, 1]).all() and (sims[2, :, 1] < 0).all()
    assert (sims[2].argmax(-1) == 0).all()  # the lone example of class 1 goes to class 0 at every head
    assert (method.head_scores(sims, labels) <= 2 / 3).all()


def paper_reference(acts, labels, n_classes, k, queries, official_ties=False):
    """A direct, loop-by-loop transcription of the paper's procedure, with this project's tie order.

    Heads that tie on score are taken by (layer, head) ascending. The official code takes
    `np.argsort(scores)[-k:][::-1]`, which within a tie puts the highest index (the deepest layer)
    first and, numpy's default sort not being stable, in an order that can differ between CPUs;
    so its selection is not reproducible bit for bit; `official_ties` takes the highest index first,
    as the "official" head order does. Votes tie-break as its `rank` rule does.
    """
    n, n_heads, _ = acts.shape
    means = [[acts[[i for i in range(n) if labels[i] == c], h].mean(0) for h in range(n_heads)] for c in range(n_classes)]

    def nearest(vector, h):
        sims = [torch.nn.functional.cosine_similarity(vector, means[c][h], dim=0).item() for c in range(n_classes)]
        return max(range(n_classes), key=lambda c: sims[c])

    scores = [sum(nearest(acts[i, h], h) == labels[i] for i in range(n)) / n for h in range(n_heads)]
    ranked = sorted(range(n_heads), key=lambda h: (-scores[h], -h if official_ties else h))[:k]
    predictions = []
    for q in queries:
        head_votes = [nearest(q[h], h) for h in ranked]
        counts = [head_votes.count(c) for c in range(n_classes)]
        best = max(counts)
        predictions.append(next(v for v in head_votes if counts[v] == best))
    return ranked, predictions


@pytest.mark.parametrize("order", ["layer-head", "official"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fidelity_to_the_papers_procedure(seed, order):
    torch.manual_seed(seed)
    n_classes, n_heads = 3, 12
    labels = torch.tensor([c for c in range(n_classes) for _ in range(4)])
    centres = torch.randn(n_classes, n_heads, 8)
    noise = torch.linspace(0.3, 3.0, n_heads).view(1, n_heads, 1)  # heads from clean to noisy
    acts = centres[labels] + noise * torch.randn(len(labels), n_heads, 8)
    queries = centres[torch.tensor([0, 1, 2, 1])] + noise * torch.randn(4, n_heads, 8)

    expected_heads, expected_predictions = paper_reference(acts, labels.tolist(), n_classes, 5, queries, order == "official")
    sims = method.cosine_to_means(acts, method.class_means(acts, labels, n_classes))
    selected = method.select_heads(method.head_scores(sims, labels), 5, order)
    predicted, _ = method.vote(method.cosine_to_means(queries, method.class_means(acts, labels, n_classes)), selected, "rank")
    assert selected.tolist() == expected_heads
    assert predicted.tolist() == expected_predictions


def test_reordering_classes_changes_no_prediction():
    torch.manual_seed(3)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    acts = torch.randn(6, 5, 4)
    queries = torch.randn(7, 5, 4)
    base_sims = method.cosine_to_means(acts, method.class_means(acts, labels, 3))
    selected = method.select_heads(method.head_scores(base_sims, labels), 3)
    base, _ = method.vote(method.cosine_to_means(queries, method.class_means(acts, labels, 3)), selected)
    for perm in itertools.permutations(range(3)):
        perm = torch.tensor(perm)  # class c is now called perm[c]
        new_labels = perm[labels]
        sims = method.cosine_to_means(acts, method.class_means(acts, new_labels, 3))
        new_selected = method.select_heads(method.head_scores(sims, new_labels), 3)
        predicted, _ = method.vote(method.cosine_to_means(queries, method.class_means(acts, new_labels, 3)), new_selected)
        assert new_selected.tolist() == selected.tolist()
        assert predicted.tolist() == perm[base].tolist()
