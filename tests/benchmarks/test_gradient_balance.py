"""benchmarks/gradient_balance.py: the training loss of one batch split by an auxiliary weight into
that term and the rest, and each part's gradient per parameter."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from clear_core.data.synthetic import write_synthetic

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import gradient_balance as gb  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "synthetic"
    write_synthetic(out, n_users=80, n_items=60, n_interactions=1200, modalities={"image": 12, "text": 8}, seed=3)
    return out


def rows(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in text.splitlines()[2:]}


def test_an_auxiliary_term_shows_in_the_tables_it_moves_and_not_in_the_frozen_ones(data, capsys):
    assert gb.main(["--model", "lgmrec", "--aux", "cl_weight", "--data", str(data), "--batch-size", "256"]) == 0
    table = rows(capsys.readouterr().out)
    # The hypergraph contrast reads the ID tables and the hyperedges, never the modality encoders.
    assert float(table["user_embedding"][1]) > 0 and float(table["hyperedges.image"][1]) > 0
    assert float(table["encoders.image.weight"][1]) == 0


def test_the_two_parts_add_up_to_the_batch_loss(data, capsys):
    assert gb.main(["--model", "lgmrec", "--aux", "cl_weight", "--data", str(data), "--batch-size", "256"]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    total, ranking, aux = (float(head.split(word)[1].split()[0]) for word in ("loss ", "rest ", "auxiliary "))
    assert total == pytest.approx(ranking + aux, abs=2e-4) and aux > 0
    assert "weighted by cl_weight 0.0001" in head


def test_an_unknown_auxiliary_weight_is_an_error_naming_it(data):
    with pytest.raises(SystemExit, match="no_such_weight.*no such attribute"):
        gb.main(["--model", "lgmrec", "--aux", "no_such_weight", "--data", str(data)])


def test_a_plugins_weight_is_split_off_the_same_way(data, capsys):
    # MRdIB's unique term on VBPR: its decoders' user tables feel it, VBPR's own user table does not.
    assert gb.main(["--model", "vbpr", "--param", "mrdib=true", "--aux", "mrdib.unique_weight",
                    "--data", str(data), "--batch-size", "256"]) == 0
    table = rows(capsys.readouterr().out)
    assert float(table["mrdib.target_users"][1]) > 0 and float(table["encoders.image.weight"][1]) > 0
    assert float(table["user_embedding"][1]) == 0
