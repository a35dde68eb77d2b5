"""Per-query predictions: the top-k kept from evaluation's score blocks (ties ordered as ranks
count them), the Parquet table built from it, and its checksummed file. Hand-built and random
cases here; tests/test_predictions_run.py checks them on a real run over the Tux Paint stamps."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xmodal.embeddings import Embedded
from xmodal.files import IntegrityError
from xmodal.retrieval.evaluate import evaluate
from xmodal.retrieval.predictions import (
    SCHEMA,
    SplitIds,
    about,
    predictions_table,
    read_predictions,
    top_k,
    write_predictions,
)
from xmodal.similarity import ranking


def dot(texts, images):
    return texts @ images.T


def _ids(data):
    return SplitIds(
        [f"img{i}" for i in range(len(data.images))], [f"cap{j}" for j in range(len(data.texts))]
    )


def _reference_top(scores, correct, k):
    """Brute force: every gallery item sorted by (-score, correct, row), the first k."""
    order = [
        np.lexsort((np.arange(len(s)), c, -s))[:k] for s, c in zip(scores, correct, strict=True)
    ]
    return np.array(order)


def test_a_tie_puts_wrong_items_first_and_the_rank_where_evaluation_counts_it():
    # every caption scores every image equally: each caption's image ranks last (3 of 3)
    data = Embedded(np.eye(3, dtype=np.float32), np.ones((3, 3), np.float32), np.arange(3))
    _, per = evaluate(data, dot, ks=(1,), bootstrap=0, return_ranks=True, top_k=3)
    assert per.t2i.tolist() == [3, 3, 3]
    assert per.t2i_top.rows.tolist() == [[1, 2, 0], [0, 2, 1], [0, 1, 2]]  # own image last
    assert (per.t2i_top.scores == 1.0).all()
    # k = 2 < gallery: which tied items make the cut follows the same rule
    _, per = evaluate(data, dot, ks=(1,), bootstrap=0, return_ranks=True, top_k=2)
    assert per.t2i_top.rows.tolist() == [[1, 2], [0, 2], [0, 1]]
    assert per.i2t_top.rows.tolist() == [[1, 2], [0, 2], [0, 1]]


def test_top_k_matches_brute_force_across_blocks_with_many_ties(monkeypatch):
    rng = np.random.default_rng(7)
    owner = np.sort(rng.integers(0, 40, 90))  # several captions per image, some none
    owner = np.unique(owner, return_inverse=True)[1]
    images = rng.integers(0, 3, (owner.max() + 1, 4)).astype(np.float32)
    images[5] = images[9]  # identical gallery vectors
    texts = rng.integers(0, 3, (90, 4)).astype(np.float32)  # small integers: many equal scores
    texts[10] = texts[11]
    data = Embedded(images, texts, owner)
    monkeypatch.setattr(ranking, "BLOCK_ELEMENTS", 7 * 40)  # several blocks each way
    _, per = evaluate(data, dot, ks=(1, 5), bootstrap=0, return_ranks=True, top_k=6)
    full = dot(texts, images)
    t2i_correct = owner[:, None] == np.arange(len(images))
    want = _reference_top(full, t2i_correct, 6)
    assert (per.t2i_top.rows == want).all()
    assert (per.t2i_top.scores == np.take_along_axis(full, want, 1)).all()
    i2t_correct = t2i_correct.T
    assert (per.i2t_top.rows == _reference_top(full.T, i2t_correct, 6)).all()
    # the first correct item sits at the rank evaluation reports, whenever it is within k
    for ranks, top, correct in ((per.t2i, per.t2i_top, t2i_correct),
                                (per.i2t, per.i2t_top, i2t_correct)):  # fmt: skip
        hits = np.take_along_axis(correct, top.rows, 1)
        first = np.where(hits.any(1), hits.argmax(1) + 1, 10**9)
        within = ranks <= 6
        assert within.any() and (~within).any()
        assert (first[within] == ranks[within]).all() and (first[~within] == 10**9).all()


def test_k_is_the_largest_k_and_at_least_ten_and_a_small_gallery_gives_short_lists():
    assert top_k([1, 5]) == 10 and top_k([1, 5, 50]) == 50
    data = Embedded(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), np.arange(3))
    _, per = evaluate(data, dot, ks=(1,), bootstrap=0, return_ranks=True, top_k=10)
    assert per.t2i_top.rows.shape == (3, 3) and per.i2t_top.rows.shape == (3, 3)


def _table():
    images = np.eye(3, dtype=np.float32)
    texts = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 0.5, 1], [0, 1, 0.2]], np.float32)
    data = Embedded(images, texts, np.array([0, 0, 1, 2]))  # image 1's caption ranks it 2nd
    _, per = evaluate(data, dot, ks=(1,), bootstrap=0, return_ranks=True, top_k=2)
    return predictions_table(per, _ids(data), {"split": "embeddings/x.npz"}), per


def test_the_table_has_one_row_per_query_both_ways():
    table, per = _table()
    assert table.schema.equals(SCHEMA)
    assert table["direction"].to_pylist() == ["t2i"] * 4 + ["i2t"] * 3
    assert table["query_id"].to_pylist() == ["cap0", "cap1", "cap2", "cap3", "img0", "img1", "img2"]
    assert table["first_positive_rank"].to_pylist() == [*per.t2i, *per.i2t]
    assert table["positives"].to_pylist() == [1, 1, 1, 1, 2, 1, 1]
    assert table["positive_ids"].to_pylist()[4] == ["cap0", "cap1"]
    assert table["top_ids"].to_pylist()[2] == ["img2", "img1"]  # caption 2 of image 1: rank 2
    assert table["first_positive_rank"].to_pylist()[2] == 2
    assert about(table) == {
        "format": 1,
        "k": 2,
        "ties": about(table)["ties"],
        "split": "embeddings/x.npz",
    }


def test_ids_must_match_the_queries():
    _, per = _table()
    with pytest.raises(ValueError, match="3 caption ids and 3 image ids for 4 caption"):
        predictions_table(per, SplitIds(["a", "b", "c"], ["x", "y", "z"]))


def test_the_file_reads_back_and_refuses_corruption(tmp_path):
    table, _ = _table()
    path = tmp_path / "p" / "fit.parquet"
    write_predictions(path, table)
    assert read_predictions(path).equals(table)
    assert about(read_predictions(path))["k"] == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["fit.parquet", "fit.parquet.sha256"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"fit\.parquet: checksum mismatch"):
        read_predictions(path)
    path.with_name("fit.parquet.sha256").unlink()
    with pytest.raises(IntegrityError, match=r"fit\.parquet: its checksum file .* is missing"):
        read_predictions(path)
    with pytest.raises(FileNotFoundError, match=r"gone\.parquet: no such predictions file"):
        read_predictions(tmp_path / "gone.parquet")


def test_a_checksummed_file_that_is_not_a_predictions_table_is_named(tmp_path):
    from xmodal.files import write_checksum

    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"direction": ["t2i"]}), path)
    write_checksum(path)
    with pytest.raises(IntegrityError, match=r"other\.parquet: not a predictions table: no column"):
        read_predictions(path)
    path.write_text("not parquet")
    write_checksum(path)
    with pytest.raises(IntegrityError, match=r"other\.parquet: not a readable Parquet file"):
        read_predictions(path)


def test_the_report_lists_the_lowest_ranks_first_ties_by_row_and_never_a_first_answer():
    from xmodal.report.worst import worst_rows

    table, per = _table()
    assert per.t2i.tolist() == [1, 1, 2, 2]
    assert [r["query_row"] for r in worst_rows(table, "t2i")] == [2, 3]
    assert [r["query_row"] for r in worst_rows(table, "t2i", n=1)] == [2]
