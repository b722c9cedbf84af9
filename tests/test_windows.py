"""Pure-function tests of the window maths: partition/reverse, shift, padding, region mask, bias index."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swinlab.functional.windows import (
    cyclic_shift,
    fit_window,
    pad_to_windows,
    region_ids,
    relative_position_index,
    reverse_unshift,
    shift_partition,
    shifted_window_mask,
    window_partition,
    window_reverse,
)

sizes = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 5),
                  st.integers(1, 5))


@settings(max_examples=40, deadline=None)
@given(sizes, st.integers(1, 3))
def test_partition_reverse_are_inverse(dims, c):
    b, nh, nw, mh, mw = dims
    x = torch.randn(b, nh * mh, nw * mw, c)
    win = window_partition(x, (mh, mw))
    assert win.shape == (b * nh * nw, mh * mw, c)
    assert torch.equal(window_reverse(win, (mh, mw), (nh * mh, nw * mw)), x)


@settings(max_examples=40, deadline=None)
@given(sizes, st.integers(0, 4), st.integers(0, 4))
def test_one_gather_shift_partition_equals_roll_then_partition(dims, sh, sw):
    b, nh, nw, mh, mw = dims
    shift = (sh % mh, sw % mw)
    x = torch.randn(b, nh * mh, nw * mw, 3, dtype=torch.float64, requires_grad=True)
    fast = shift_partition(x, (mh, mw), shift)
    slow = window_partition(cyclic_shift(x, shift), (mh, mw))
    assert torch.equal(fast, slow)
    back = reverse_unshift(fast, (mh, mw), shift, (nh * mh, nw * mw))
    size = (nh * mh, nw * mw)
    assert torch.equal(back, cyclic_shift(window_reverse(slow, (mh, mw), size), shift, reverse=True))
    assert torch.equal(back, x)
    g = torch.randn_like(fast)
    assert torch.equal(torch.autograd.grad(fast, x, g)[0], torch.autograd.grad(slow, x, g)[0])
    w = torch.randn_like(fast, requires_grad=True)
    gx = torch.randn_like(x)
    (a,) = torch.autograd.grad(reverse_unshift(w, (mh, mw), shift, (nh * mh, nw * mw)), w, gx)
    (e,) = torch.autograd.grad(cyclic_shift(window_reverse(w, (mh, mw), (nh * mh, nw * mw)), shift,
                                            reverse=True), w, gx)
    assert torch.equal(a, e)


def test_partition_takes_contiguous_windows_row_major():
    x = torch.arange(4 * 6).view(1, 4, 6, 1)
    win = window_partition(x, (2, 3)).squeeze(-1)
    assert win.tolist() == [[0, 1, 2, 6, 7, 8], [3, 4, 5, 9, 10, 11],
                            [12, 13, 14, 18, 19, 20], [15, 16, 17, 21, 22, 23]]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(0, 8), st.integers(0, 8))
def test_cyclic_shift_is_inverted_by_reverse(h, w, sh, sw):
    x = torch.randn(2, h, w, 3)
    y = cyclic_shift(x, (sh, sw))
    assert torch.equal(cyclic_shift(y, (sh, sw), reverse=True), x)
    if h > sh and w > sw:
        assert torch.equal(y[:, 0, 0], x[:, sh, sw])  # up-left roll: the token at (S, S) moves to (0, 0)


def test_pad_to_windows_pads_bottom_right_with_zeros():
    x = torch.ones(1, 5, 9, 2)
    y = pad_to_windows(x, (7, 7))
    assert y.shape == (1, 7, 14, 2)
    assert torch.equal(y[:, :5, :9], x) and y[:, 5:].abs().sum() == 0 and y[:, :, 9:].abs().sum() == 0
    assert pad_to_windows(x, (5, 3)) is x  # nothing to pad: no copy


@pytest.mark.parametrize(("size", "expect"), [
    ((56, 56), ((7, 7), (3, 3))),
    ((7, 7), ((7, 7), (0, 0))),  # map equals window: one window, no shift
    ((4, 4), ((4, 4), (0, 0))),  # map smaller: window shrinks
    ((7, 8), ((7, 7), (0, 3))),  # only the long axis shifts
    ((3, 20), ((3, 7), (0, 3))),
])
def test_fit_window(size, expect):
    assert fit_window(size, (7, 7), (3, 3)) == expect
    assert fit_window(size, (7, 7), (0, 0))[1] == (0, 0)


def test_region_ids_match_the_papers_picture():
    # Fig. 4 of the paper: an 8×8 map, M=4, S=2. After the roll the 2×2 windows hold
    # 1, 2, 2 and 4 regions (top-left, top-right, bottom-left, bottom-right).
    ids = region_ids((8, 8), (4, 4), (2, 2))
    win = window_partition(ids[None, :, :, None], (4, 4)).squeeze(-1)
    assert [len(set(w.tolist())) for w in win] == [1, 2, 2, 4]
    assert ids.unique().numel() == 9  # 3×3 strips
    assert region_ids((8, 8), (4, 4), (0, 0)).unique().numel() == 1  # no shift: one region
    ids = region_ids((12, 12), (4, 4), (2, 2))
    # the strips: [0, H-M), [H-M, H-S), [H-S, H)
    assert ids[:8, :8].unique().numel() == 1 and ids[8:10, :8].unique().numel() == 1
    assert ids[10:, 10:].unique().numel() == 1 and ids[10, 10] != ids[9, 9]


def test_shifted_window_mask():
    assert shifted_window_mask((8, 8), (4, 4), (0, 0)) is None
    mask = shifted_window_mask((8, 8), (4, 4), (2, 2))
    assert mask.shape == (4, 16, 16)
    assert torch.equal(mask, mask.transpose(1, 2))  # symmetric
    assert torch.all(mask.diagonal(dim1=1, dim2=2) == 0)  # a token always sees itself
    assert set(mask.unique().tolist()) == {0.0, -100.0}
    assert torch.all(mask[0] == 0)  # the top-left window lies in one region
    # bottom-right window: token (0,0) and token (3,3) of the window came from different regions
    assert mask[3, 0, 15] == -100 and mask[3, 0, 1] == 0 and mask[3, 0, 2] == -100
    # number of visible keys per query in the bottom-right window: each region is 2×2
    assert torch.all((mask[3] == 0).sum(-1) == 4)


def _expected_index(window, table_window):
    """The paper's index, pair by pair: token i at (hi, wi), token j at (hj, wj) of a row-major
    window read the table row (Δh + Mh' - 1)(2Mw' - 1) + (Δw + Mw' - 1), Δ = position i - position j,
    M' the table's window."""
    (mh, mw), (th, tw) = window, table_window
    tokens = [(h, w) for h in range(mh) for w in range(mw)]
    return torch.tensor([[(hi - hj + th - 1) * (2 * tw - 1) + (wi - wj + tw - 1) for hj, wj in tokens]
                         for hi, wi in tokens])


@pytest.mark.parametrize(("window", "table_window"), [
    ((7, 7), (7, 7)),
    ((2, 3), (2, 3)),  # non-square: rows and columns must not be swapped
    ((3, 5), (3, 5)),
    ((4, 4), (7, 7)),  # a smaller window reads the centre of a larger table
    ((2, 5), (7, 7)),
    ((3, 2), (4, 6)),
])
def test_relative_position_index(window, table_window):
    idx = relative_position_index(window, table_window)
    n = window[0] * window[1]
    assert idx.shape == (n, n)
    assert torch.equal(idx, _expected_index(window, table_window))
    centre = (table_window[0] - 1) * (2 * table_window[1] - 1) + table_window[1] - 1  # Δ = (0, 0)
    assert torch.all(idx.diagonal() == centre)
    # (i, j) and (j, i) have opposite offsets, which sit mirrored about the table's centre
    assert torch.all(idx + idx.T == 2 * centre)
    # every offset a window can hold, each once per offset: (2Mh-1)(2Mw-1) distinct rows
    assert idx.unique().numel() == (2 * window[0] - 1) * (2 * window[1] - 1)


def test_relative_position_index_covers_the_table_and_refuses_a_larger_window():
    idx = relative_position_index((7, 7))
    assert idx.min() == 0 and idx.max() == 13 * 13 - 1
    assert torch.equal(idx, relative_position_index((7, 7), (7, 7)))
    with pytest.raises(ValueError, match="larger than the bias table"):
        relative_position_index((8, 8), (7, 7))
