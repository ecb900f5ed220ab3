"""benchmarks/same_weights.py: the side-by-side report of the same-weights checks, on a reference
that is our own model behind MMRec's interface (so every printed difference must be nil)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import same_weights as sw  # noqa: E402

from clear_core.data.synthetic import generate_synthetic  # noqa: E402
from clear_core.models import build_model  # noqa: E402


class _AsMMRec(torch.nn.Module):
    """Our model with MMRec's calls: a [3, batch] loss and sigmoid scores (as SLMRec's)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def calculate_loss(self, interaction):
        return self.inner.loss(*interaction)

    def full_sort_predict(self, interaction):
        self.inner.prepare_scoring()
        scores = self.inner.score(interaction[0])
        self.inner.finish_scoring()
        return torch.sigmoid(scores)


def test_the_report_compares_loss_every_mapped_gradient_and_the_scores(capsys):
    data = generate_synthetic(n_users=40, n_items=30, n_interactions=400, seed=3).dataset
    torch.manual_seed(0)
    ours = build_model("lightgcn", data, {}).double()
    torch.manual_seed(0)
    ref = _AsMMRec(build_model("lightgcn", data, {}).double())
    sw.compare(ours, ref, data, 64, dict(ref.inner.named_parameters()), reference_scores=torch.logit)
    out = capsys.readouterr().out
    loss = re.search(r"loss: ours (\S+)  MMRec (\S+)", out)
    assert loss and loss.group(1) == loss.group(2)
    gradients = re.findall(r"gradient (\S+) +max \|ours - MMRec\| (\S+)", out)
    assert [name for name, _ in gradients] == [name for name, _ in ours.named_parameters()]
    assert all(float(diff) == 0.0 for _, diff in gradients)
    assert float(re.search(r"scores max \|ours - MMRec\| (\S+)", out).group(1)) < 1e-9
