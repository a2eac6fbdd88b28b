"""Compressed sparse rows from pairs, against a brute-force set of pairs."""

from __future__ import annotations

import torch

from kgexp.data.csr import distinct_pairs, offsets_of


def test_distinct_pairs_and_offsets_rebuild_the_set_of_pairs():
    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 7, (200,), generator=generator)
    columns = torch.randint(0, 5, (200,), generator=generator)
    found_rows, found_columns = distinct_pairs(rows, columns, num_columns=5)
    expected = sorted(set(zip(rows.tolist(), columns.tolist(), strict=True)))
    assert list(zip(found_rows.tolist(), found_columns.tolist(), strict=True)) == expected
    offsets = offsets_of(torch.bincount(found_rows, minlength=8))
    assert offsets.tolist()[0] == 0 and offsets.tolist()[-1] == len(expected)
    for row in range(8):
        members = found_columns[offsets[row] : offsets[row + 1]].tolist()
        assert members == sorted(c for r, c in expected if r == row)


def test_offsets_of_hand_made_counts():
    assert offsets_of(torch.tensor([2, 0, 3])).tolist() == [0, 2, 2, 5]
    assert offsets_of(torch.tensor([], dtype=torch.int64)).tolist() == [0]
