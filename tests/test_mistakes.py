"""The mistakes, looked at: the misclassified queries, and a deterministic PCA of one head's activations,
checked against numpy's eigendecomposition of the covariance (an independent computation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sav_explorer import HeadActivations, HeadLayout, HeadVote, LayerBlock, Prediction
from sav_explorer.errors import DataError
from sav_explorer.mistakes import Mistake, fix_signs, head_projection, head_rows, misclassified, pca


def prediction(label: str, votes: dict[str, int]) -> Prediction:
    return Prediction(label, votes, [HeadVote(0, 0, label, dict.fromkeys(votes, 0.0))])


def numpy_pca(rows: np.ndarray, n: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The textbook way: eigenvectors of the covariance, largest eigenvalues first, each flipped so that
    its largest-magnitude entry is positive; coordinates are the centred rows on them."""
    centred = rows - rows.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    order = np.argsort(values)[::-1][:n]
    components = vectors[:, order].T
    for row in components:
        row *= np.sign(row[np.argmax(np.abs(row))])
    return centred @ components.T, components, values[order] / values.sum()


def test_the_misclassified_queries_are_those_whose_label_differs_from_the_truth_in_query_order():
    predictions = [
        prediction("red", {"blue": 1, "red": 4}),
        prediction("blue", {"blue": 3, "red": 2}),
        prediction("red", {"blue": 0, "red": 5}),
        prediction("red", {"blue": 2, "red": 3}),
    ]
    truth = ["red", "red", "red", "blue"]
    assert misclassified(predictions, truth) == [
        Mistake(1, "red", "blue", {"blue": 3, "red": 2}),
        Mistake(3, "blue", "red", {"blue": 2, "red": 3}),
    ]
    assert misclassified(predictions[:1], ["red"]) == []
    assert misclassified([prediction("red", {"red": 1})], ["green"]) == [
        Mistake(0, "green", "red", {"red": 1})
    ]  # an unknown label is an error
    with pytest.raises(DataError, match=r"one true label per prediction \(4\); got 3"):
        misclassified(predictions, truth[:3])


def test_the_pca_equals_the_eigenvectors_of_the_covariance_with_the_largest_loading_positive():
    rows = torch.randn(40, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rows[:, 3] *= 4  # distinct variances, so that the components are well defined
    rows[:, 7] *= 2.5
    projection = pca(rows)
    coords, components, explained = numpy_pca(rows.numpy())
    np.testing.assert_allclose(projection.coords.numpy(), coords, atol=1e-9)
    np.testing.assert_allclose(projection.components.numpy(), components, atol=1e-9)
    np.testing.assert_allclose(projection.explained.numpy(), explained, atol=1e-12)
    np.testing.assert_allclose(projection.mean.numpy(), rows.numpy().mean(axis=0), atol=1e-12)
    for component in projection.components:
        assert component[component.abs().argmax()] > 0


def test_the_projection_does_not_depend_on_the_order_of_the_rows_nor_on_the_svds_sign():
    rows = torch.randn(30, 8, generator=torch.Generator().manual_seed(1)) * torch.arange(8, 0, -1)
    order = torch.randperm(30, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(pca(rows[order]).coords, pca(rows).coords[order], atol=1e-9, rtol=0)
    flipped = torch.tensor([[0.1, -0.9, 0.2], [0.6, 0.2, -0.6], [-0.5, 0.5, 0.0]])
    expected = torch.tensor([[-0.1, 0.9, -0.2], [0.6, 0.2, -0.6], [0.5, -0.5, 0.0]])  # among equal magnitudes, the first decides
    torch.testing.assert_close(fix_signs(flipped), expected)


def test_points_on_a_plane_come_back_as_their_coordinates_in_it():
    """Rows a * u + b * v + c with orthonormal u, v, and a, b uncorrelated with a spread wider than b: the
    projection gives back (a, b) less their means, up to the sign rule, and the two components explain all the variance."""
    generator = torch.Generator().manual_seed(3)
    basis, _ = torch.linalg.qr(torch.randn(6, 2, generator=generator, dtype=torch.float64))
    u, v = basis[:, 0], basis[:, 1]
    spread = torch.randn(25, 2, generator=generator, dtype=torch.float64)
    spread, _ = torch.linalg.qr(spread - spread.mean(dim=0))  # columns of mean 0 and uncorrelated in the sample itself
    a, b = spread[:, 0] * 5, spread[:, 1]
    rows = a[:, None] * u + b[:, None] * v + 3.0
    projection = pca(rows)
    expected = torch.stack([(a - a.mean()) * torch.sign(u[u.abs().argmax()]), (b - b.mean()) * torch.sign(v[v.abs().argmax()])], dim=1)
    torch.testing.assert_close(projection.coords, expected, atol=1e-9, rtol=0)
    assert float(projection.explained.sum()) == pytest.approx(1.0)


def test_degenerate_rows_project_to_zero_and_bad_rows_are_refused():
    one = pca(torch.tensor([[1.0, 2.0, 3.0]]))
    assert one.coords.tolist() == [[0.0, 0.0]] and one.explained.tolist() == [0.0, 0.0]
    line = pca(torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]))  # one direction of variance: the second component is zero
    assert line.coords[:, 1].tolist() == [0.0, 0.0, 0.0] and line.explained.tolist() == pytest.approx([1.0, 0.0])
    assert line.coords[:, 0].tolist() == pytest.approx([-(2**0.5), 0.0, 2**0.5])
    with pytest.raises(DataError, match="NaN or infinite"):
        pca(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))
    with pytest.raises(DataError, match="non-empty"):
        pca(torch.zeros(0, 3))


def layout_and_blocks(n: int, seed: int) -> HeadActivations:
    generator = torch.Generator().manual_seed(seed)
    layout = HeadLayout((LayerBlock(0, 2, 4), LayerBlock(3, 3, 5)))
    return HeadActivations(layout, [torch.randn(n, 2, 4, generator=generator), torch.randn(n, 3, 5, generator=generator)])


def test_a_heads_projection_is_the_pca_of_its_unit_rows_support_first_then_queries():
    support, queries = layout_and_blocks(12, 4), layout_and_blocks(7, 5)
    head = (3, 1)
    assert torch.equal(head_rows(support, head), support.blocks[1][:, 1])
    projection = head_projection(support, queries, head)
    rows = np.concatenate([support.blocks[1][:, 1].numpy(), queries.blocks[1][:, 1].numpy()]).astype(np.float64)
    coords, _, _ = numpy_pca(rows / np.linalg.norm(rows, axis=1, keepdims=True))
    np.testing.assert_allclose(projection.coords.numpy(), coords, atol=1e-6)
    scaled = queries.blocks[1][:, 1] * torch.linspace(0.5, 9.0, 7)[:, None]  # lengths change, directions do not
    torch.testing.assert_close(head_projection(support, scaled, head).coords, projection.coords, atol=1e-6, rtol=0)
    raw = head_projection(support, queries, head, unit=False)
    np.testing.assert_allclose(raw.coords.numpy(), numpy_pca(rows)[0], atol=1e-6)
    alone = head_projection(None, queries, head)
    assert alone.coords.shape == (7, 2)
    with pytest.raises(DataError, match="no head 2 in layer 0"):
        head_projection(support, queries, (0, 2))
    with pytest.raises(DataError, match=r"differ in size: \[4, 5\]"):
        head_projection(support.blocks[0][:, 0], queries, head)
