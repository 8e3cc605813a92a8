"""How a pool's inputs are cut into blocks."""

from __future__ import annotations

from weaksam.io.parts import MAX_BLOCK_ROWS, rows_per_block


def test_rows_per_block() -> None:
    assert rows_per_block(180, 8, 1) == 45  # four blocks for one actor
    assert rows_per_block(180, 8, 2) == 23  # eight for two
    assert rows_per_block(20, 8, 4) == 10  # two batches' worth: two blocks, not sixteen
    assert rows_per_block(3, 8, 2) == 8  # never less than a batch
    assert rows_per_block(1_000_000, 8, 4) == MAX_BLOCK_ROWS
