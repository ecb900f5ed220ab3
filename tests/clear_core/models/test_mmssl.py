"""MMSSL: modality-aware ID views fused across modalities, a WGAN-GP discriminator stepped by
the model itself, generated modality graphs, and the cross-modal GRACE contrast; + CLEAR."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from multimodal_support import all_scores, tiny_dataset, train_epochs
from resume_support import assert_resume_matches_uninterrupted

from clear_core.models import build_model, resolve_params
from clear_core.models.mmssl import grace_loss, gradient_penalty
from clear_core.trainer import adam_optimizer

BATCH = (torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7]), torch.tensor([8, 9, 10, 11]))


def build(**over):
    torch.manual_seed(0)
    return build_model("mmssl", tiny_dataset(), {"embedding_size": 8, **over})


def test_defaults_follow_the_reference_parser():
    p = resolve_params("mmssl")
    assert (p["cl_weight"], p["adversarial_weight"], p["temperature"], p["head_num"]) == (0.03, 1e-4, 0.5, 4)


def test_loss_decreases_over_a_few_epochs_on_cpu():
    ds = tiny_dataset()
    torch.manual_seed(0)
    model = build_model("mmssl", ds, {"embedding_size": 16})
    losses = train_epochs(model, ds, 5, lr=0.01)
    assert losses[-1] < losses[0] * 0.95, losses


def test_grace_loss_on_a_hand_worked_case():
    # Orthogonal rows matched with themselves, τ = 1: the positive e^1 over
    # (e^1 + e^0) intra-view + (e^1 + e^0) inter-view - e^1 self  =  e / (e + 2).
    z = torch.tensor([[2.0, 0.0], [0.0, 5.0]])
    assert float(grace_loss(z, z, 1.0)) == pytest.approx(-math.log(math.e / (math.e + 2) + 1e-8))


def test_gradient_penalty_of_a_linear_critic_is_its_weight_norm_off_one():
    critic = torch.nn.Linear(3, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[2.0, 0.0, 0.0]]))
    real, fake = torch.randn(5, 3), torch.randn(5, 3)
    assert float(gradient_penalty(critic, real, fake).detach()) == pytest.approx(0.3 * (2.0 - 1.0) ** 2)


def test_fusion_is_what_the_reference_multi_head_attention_computes():
    """The reference's attention (K built from Q, V broadcast along the query axis), written
    out literally with random w_q: the output does not depend on it, and equals ours."""
    torch.manual_seed(1)
    heads, d, n = 4, 8, 5
    views = [torch.randn(n, d), torch.randn(n, d)]
    w_q, w_cat = torch.randn(d, d), torch.randn(heads * d, d)
    q = torch.stack(views)
    v = q
    beh, d_h = q.shape[0], d // heads
    Q = (q @ w_q).reshape(beh, n, heads, d_h).permute(2, 0, 1, 3)
    K = Q
    att = (Q.unsqueeze(2) * K.unsqueeze(1)).sum(-1, keepdim=True) / math.sqrt(d_h)
    Z = (F.softmax(att, dim=2) * v.unsqueeze(1)).sum(2)
    reference = (torch.cat(list(Z), -1) @ w_cat).mean(0)
    ours = torch.stack([torch.cat([x] * heads, dim=1) @ w_cat for x in views]).mean(0)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)


def test_discriminator_is_stepped_by_the_model_and_left_out_of_the_trainers_optimiser():
    model = build(dropout=0.0)
    model.train()
    model.on_epoch_start(1)
    d_before = [q.detach().clone() for q in model.discriminator.parameters()]
    loss = model.loss(*BATCH)
    assert any(not torch.equal(a, b) for a, b in zip(d_before, model.discriminator.parameters(), strict=True))
    loss.backward()
    assert all(q.grad is None for q in model.discriminator.parameters())  # G's step builds none
    assert model.user_embedding.grad is not None
    trained = {id(q) for q in adam_optimizer(model, 1e-3).param_groups[0]["params"]}
    assert not trained & {id(q) for q in model.discriminator.parameters()}
    assert id(model.user_embedding) in trained


def test_adversarial_term_is_minus_the_critic_mean_on_the_generators_rows():
    with_adv = build(dropout=0.0, adversarial_weight=0.5, cl_weight=0.0)
    without = build(dropout=0.0, adversarial_weight=0.0, cl_weight=0.0)
    without.load_state_dict(with_adv.state_dict())
    for model in (with_adv, without):
        model.train()
        model.on_epoch_start(1)
    # D frozen in its evaluation mode and not stepped: its output on the generator's rows is
    # then a fixed function, and the term can be checked exactly.
    with_adv.discriminator_step = lambda users: 0.0
    with_adv.discriminator.eval()
    diff = with_adv.loss(*BATCH) - without.loss(*BATCH)
    out = without.forward_all()
    users = BATCH[0]
    fake = torch.cat([without.masked_similarity(users, out["feat_users"][m], out["feat_items"][m])
                      for m in without.modality_names])
    assert fake.shape == (2 * len(users), without.n_items)
    torch.testing.assert_close(diff, -0.5 * with_adv.discriminator(fake).mean(), rtol=1e-5, atol=1e-6)


def test_real_rows_are_the_users_interactions_softened_and_normalised():
    model = build(log_log_scale=0.0, ui_pre_scale=0.0)
    users = torch.tensor([0, 7])
    rows = model.real_rows(users, torch.zeros(2, model.n_items))
    seen = model.interactions.index_select(0, users).to_dense()
    expected = F.normalize(seen / seen.sum(1, keepdim=True), dim=1)  # softmax at τ = 0.005 ≈ uniform on seen
    torch.testing.assert_close(rows, expected, rtol=1e-4, atol=1e-4)


def test_masked_similarity_hides_training_items():
    model = build()
    users = torch.tensor([0, 1])
    sim = model.masked_similarity(users, model.user_embedding, model.item_embedding)
    seen = model.interactions.index_select(0, users).to_dense().bool()
    assert torch.all(sim[seen] == 0) and torch.allclose(sim.norm(dim=1), torch.ones(2))


def test_modality_graphs_follow_the_references_schedule():
    model = build(dropout=0.0, adversarial_weight=0.0, graph_refresh_batches=2, graph_topk_rate=0.03)
    k = int(model.n_items * 0.03)
    model.train()
    model.on_epoch_start(1)
    first = (torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]))
    second = (torch.tensor([5, 6]), torch.tensor([2, 3]), torch.tensor([4, 5]))
    model.loss(*first)   # batch 0: gathers
    model.loss(*second)  # batch 1: gathers
    assert model._modality_edges["image"] is None
    model.loss(*first)   # batch 2: rebuilds from batches 0 and 1
    users, items = model._modality_edges["image"]
    assert sorted(set(users.tolist())) == [0, 1, 5, 6] and len(users) == 4 * k
    seen = model.interactions.to_dense()
    assert not seen[users, items].any()  # top-k of the masked similarity: never a training item


def test_reference_defaults_empty_the_modality_graphs_after_the_first_batch():
    model = build(dropout=0.0, adversarial_weight=0.0)
    model.train()
    model.on_epoch_start(1)
    model.loss(*BATCH)
    model.loss(*BATCH)
    users, _ = model._modality_edges["image"]
    assert len(users) == 0
    out = model.forward_all()
    assert not out["id_users"]["image"].any()


def test_plugin_is_switched_on_by_configuration():
    ds = tiny_dataset()
    model = build_model("mmssl", ds, {"embedding_size": 16, "projection": "fixed", "redundancy_rank": 2})
    train_epochs(model, ds, 2, lr=0.01)
    assert int(model.projection.refreshed_at) == 2
    assert torch.isfinite(all_scores(model, ds)).all()


def test_checkpoint_resume_gives_the_same_metrics(tmp_path):
    params = {"embedding_size": 8, "graph_refresh_batches": 2, "graph_topk_rate": 0.05}
    assert_resume_matches_uninterrupted(tiny_dataset(), "mmssl", params, tmp_path, epochs=3)
