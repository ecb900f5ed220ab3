"""MMSSL (Wei et al., WWW'23, "Multi-Modal Self-Supervised Learning for Recommendation") as its
authors implement it (github HKUDS/MMSSL, MMSSL/Models.py and main.py with the defaults of
utility/parser.py), and MMSSL + CLEAR by configuration.

Generator (the recommender), per batch:

* Modality m: ``f_m = dropout(φ_m(x_m))`` (the reference's ``image_trans``, a linear map of the
  frozen raw features) through :meth:`MultimodalRecommender.encode`, so ``projection: fixed``
  applies; users ``F^u_m = Â_u f_m``, items ``F^i_m = Â_i F^u_m`` with ``Â_u = D_u^{-1/2} R`` and
  ``Â_i = D_i^{-1/2} R^T`` (the reference's ``csr_norm(mean_flag=True)``: one-sided).
* Modality-aware ID views: ``E^u_m = Â_u^m E_i``, ``E^i_m = Â_i^m E_u`` on the modality's own
  user-item graph ``Â^m`` (the training graph at first, then rebuilt from what the generator
  ranks highest, below).
* Cross-modal fusion: ``E_u + id_cat_rate · normalize(mean_m (E^u_m ⊗ 1_heads) W)`` (same for
  items). This is what the reference's "multi-head self-attention" computes: its attention
  weights are softmax-normalised over the key modalities and then multiply values indexed by
  the QUERY modality, so they sum out to one; ``w_q``, ``w_k`` and the other attention
  matrices never reach the output. The concatenation of the heads times ``w_self_attention_cat``
  (``W`` here, (heads·d) x d) is what remains, and is what is trained here.
* Propagation: ``n_ui_layers`` rounds ``u ← Â_u i``, ``i ← Â_i u`` (the last round under a
  row softmax), mean of the layers; plus ``model_cat_rate · Σ_m normalize(F_m)``.
* Loss: BPR + reg_weight · ½(‖u‖²+‖p‖²+‖n‖²)/B + feat_reg_weight · ½ Σ_m (‖F^u_m‖²+‖F^i_m‖²)/n_items
  + adversarial_weight · (-mean D(fake)) + cl_weight · Σ_m GRACE(E^u_m[users], u_final[users], τ).

Discriminator (the adversary), one step per batch BEFORE the generator's, on detached inputs:
"fake" rows are ``normalize(F^u_m[u] F^i_m^T ⊙ (1 - R[u]))`` for each modality, "real" rows
``normalize(softmax((R[u] + Gumbel · log_log_scale)/real_data_tau) + ui_pre_scale · S[u])`` with
``S`` the same masked similarity of the final embeddings. ``D`` = MLP n_items -> n/4 -> n/8 -> 1
with BatchNorm, dropout 0.31 / 0.5 and ``100 · sigmoid``; WGAN loss ``-mean D(real) + mean
D(fake) + gp_weight · 0.3 · mean (‖∇D(x̂)‖ - 1)²`` on random interpolates; Adam (lr
``discriminator_lr``, betas 0.5 / 0.9). It is stepped inside :meth:`loss` with its own optimiser,
and :meth:`self_stepped_parameters` keeps its parameters out of the trainer's optimiser: the
trainer sees one loss per batch, as for every other model. The generator's forward does not
build gradients for ``D``'s weights.

Modality graphs ``Â^m`` (the reference's "generative augmentation"): every batch adds, for the
batch's users, the ``int(graph_topk_rate · n_items)`` items of highest ``F^u_m F^i_m^T`` score
(training items masked); every ``graph_refresh_batches``-th batch of an epoch (not the first)
the graph is rebuilt from what was gathered since the last rebuild, and the gathering restarts.
With the reference's defaults (refresh every batch, top-k of 0.0001 · 6,710 = 0 items on
TikTok) the modality graphs are empty from the second batch on and the modality-aware ID views
vanish; this is reproduced, not repaired, because it is what the published numbers come from.

Departures, each marked where it changes anything:

* The reference's LeakyReLU in ``D`` is ``nn.LeakyReLU(True)``, a negative slope of 1 (the
  identity); kept (slope 1), so ``D`` is linear up to its BatchNorm and sigmoid.
* The gradient penalty draws one interpolation weight per row of the actual batch (the
  reference sizes it by the configured batch size, which fails on a shorter last batch).
* More than two modalities: fake and real rows are stacked for every modality (the reference
  writes image and text). Trainer: MMSSL uses AdamW with lr 5.5e-4 and a 0.96^(epoch/50)
  schedule; here the trainer's Adam (set ``train.learning_rate: 0.00055``), no schedule.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clear_core.data.dataset import Dataset
from clear_core.graph import quiet_sparse_notices, user_item_matrix
from clear_core.item_graph import propagate_with_transpose
from clear_core.models import register
from clear_core.models.losses import bpr_loss
from clear_core.models.multimodal import MULTIMODAL_PARAMS, MultimodalRecommender

#: The discriminator's dropouts (``G_drop1``, ``G_drop2``) and the penalty's own factor (LAMBDA).
DISCRIMINATOR_DROPOUT = (0.31, 0.5)
PENALTY_LAMBDA = 0.3


def grace_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """MMSSL's ``batched_contrastive_loss`` (GRACE): for row i,
    ``-log( e(z1_i, z2_i) / (Σ_j e(z1_i, z1_j) + Σ_j e(z1_i, z2_j) - e(z1_i, z1_i)) + 1e-8 )`` with
    ``e(a, b) = exp(cos(a, b)/τ)``: the other view's rows and this view's other rows are negatives."""
    a, b = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    refl = torch.exp(a @ a.T / temperature)
    between = torch.exp(a @ b.T / temperature)
    denominator = refl.sum(1) + between.sum(1) - refl.diagonal()
    return -torch.log(between.diagonal() / denominator + 1e-8).mean()


class Discriminator(nn.Module):
    """The reference's ``Discriminator``: ``100 · σ(MLP(x))`` over a user's row of item scores."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden1, hidden2 = max(dim // 4, 1), max(dim // 8, 1)
        self.net = nn.Sequential(
            nn.Linear(dim, hidden1), nn.LeakyReLU(1.0), nn.BatchNorm1d(hidden1), nn.Dropout(DISCRIMINATOR_DROPOUT[0]),
            nn.Linear(hidden1, hidden2), nn.LeakyReLU(1.0), nn.BatchNorm1d(hidden2), nn.Dropout(DISCRIMINATOR_DROPOUT[1]),
            nn.Linear(hidden2, 1), nn.Sigmoid(),
        )
        for mod in self.modules():
            if isinstance(mod, nn.Linear):
                nn.init.kaiming_normal_(mod.weight)
                nn.init.zeros_(mod.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 100 * self.net(x).view(-1)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: ``0.3 · mean (‖∇D(αr + (1-α)f)‖ - 1)²``, one α ~ U(0, 1) per row."""
    alpha = torch.rand(real.shape[0], 1, device=real.device).expand_as(real)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_()
    out = critic(mixed)
    (grad,) = torch.autograd.grad(out, mixed, torch.ones_like(out), create_graph=True)
    return ((grad.norm(2, dim=1) - 1) ** 2).mean() * PENALTY_LAMBDA


def _one_sided(rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int):
    """``D_r^{-1/2} A`` (duplicates summed, as scipy's csr_matrix does) and its transpose, CSR."""
    ones = torch.ones(len(rows), device=rows.device)
    degree = torch.zeros(n_rows, device=rows.device).index_add_(0, rows, ones)
    return user_item_matrix(rows, cols, n_rows, n_cols, (degree + 1e-8).rsqrt()[rows])


@register
class MMSSL(MultimodalRecommender):
    name = "mmssl"
    params = {
        **MULTIMODAL_PARAMS,
        "n_ui_layers": int,
        "dropout": float,
        "model_cat_rate": float,
        "id_cat_rate": float,
        "head_num": int,
        "reg_weight": float,
        "feat_reg_weight": float,
        "adversarial_weight": float,
        "cl_weight": float,
        "temperature": float,
        "discriminator_lr": float,
        "gradient_penalty_weight": float,
        "real_data_tau": float,
        "ui_pre_scale": float,
        "log_log_scale": float,
        "graph_refresh_batches": int,
        "graph_topk_rate": float,
    }

    def check_params(self, dataset: Dataset, params) -> list[str]:
        problems = []
        if params["n_ui_layers"] < 1:
            problems.append(f"n_ui_layers: expected >= 1, got {params['n_ui_layers']}")
        if not 0.0 <= params["dropout"] < 1.0:
            problems.append(f"dropout: expected a number in [0, 1), got {params['dropout']}")
        for field in ("head_num", "graph_refresh_batches"):
            if params[field] < 1:
                problems.append(f"{field}: expected >= 1, got {params[field]}")
        for field in ("model_cat_rate", "id_cat_rate", "feat_reg_weight", "adversarial_weight",
                      "cl_weight", "gradient_penalty_weight", "ui_pre_scale", "log_log_scale"):
            if params[field] < 0:
                problems.append(f"{field}: expected >= 0, got {params[field]}")
        for field in ("discriminator_lr", "real_data_tau"):  # temperature: clear_core.param_rules
            if not params[field] > 0:
                problems.append(f"{field}: expected > 0, got {params[field]}")
        if not 0.0 <= params["graph_topk_rate"] <= 1.0:
            problems.append(f"graph_topk_rate: expected a number in [0, 1], got {params['graph_topk_rate']}")
        return problems

    def __init__(self, dataset: Dataset, **params: Any) -> None:
        super().__init__(dataset, **params)
        d = self.embedding_size
        for name in ("n_ui_layers", "dropout", "model_cat_rate", "id_cat_rate", "head_num", "reg_weight",
                     "feat_reg_weight", "adversarial_weight", "cl_weight", "temperature",
                     "gradient_penalty_weight", "real_data_tau", "ui_pre_scale", "log_log_scale",
                     "graph_refresh_batches", "graph_topk_rate"):
            setattr(self, name, params[name])
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        self.fusion = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.head_num * d, d)))
        self.discriminator = Discriminator(self.n_items)
        self.discriminator_optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=params["discriminator_lr"], betas=(0.5, 0.9)
        )

        pairs = np.unique(np.asarray(dataset.train, dtype=np.int64).reshape(-1, 2), axis=0)
        users, items = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
        self.register_buffer("train_users", users, persistent=False)
        self.register_buffer("train_items", items, persistent=False)
        self._set_graph("base", users, items)
        with quiet_sparse_notices():
            interactions = torch.sparse_coo_tensor(
                torch.stack([users, items]), torch.ones(len(users)), (self.n_users, self.n_items),
                check_invariants=False,
            ).coalesce()
        self.register_buffer("interactions", interactions, persistent=False)
        # Each modality's own graph: None = the training graph; else its (users, items) edges.
        self._modality_edges: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {m: None for m in self.modality_names}
        self._gathered: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {m: [] for m in self.modality_names}
        self._batch = 0
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    # --- graphs ---------------------------------------------------------------------------------
    def _set_graph(self, key: str, users: torch.Tensor, items: torch.Tensor) -> None:
        """Register ``Â_u`` and ``Â_i`` (one-sided normalised) of these edges under ``key``."""
        ui, ui_t = _one_sided(users, items, self.n_users, self.n_items)
        iu, iu_t = _one_sided(items, users, self.n_items, self.n_users)
        for name, value in (("ui", ui), ("ui_t", ui_t), ("iu", iu), ("iu_t", iu_t)):
            self.register_buffer(f"graph_{key}_{name}", value, persistent=False)

    def _graph(self, key: str) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        get = lambda name: getattr(self, f"graph_{key}_{name}")  # noqa: E731
        return (get("ui"), get("ui_t")), (get("iu"), get("iu_t"))

    def _modality_graph(self, m: str):
        return self._graph("base" if self._modality_edges[m] is None else m)

    def _install_modality_edges(self, m: str, users: torch.Tensor, items: torch.Tensor) -> None:
        device = self.train_users.device
        self._modality_edges[m] = (users.to(device), items.to(device))
        self._set_graph(m, users.to(device), items.to(device))

    # --- generator ------------------------------------------------------------------------------
    def forward_all(self) -> dict[str, Any]:
        (ui, ui_t), (iu, iu_t) = self._graph("base")
        prop = propagate_with_transpose
        features = {m: F.dropout(f, self.dropout, self.training) for m, f in self.encode().items()}
        feat_users = {m: prop(ui, ui_t, f) for m, f in features.items()}
        feat_items = {m: prop(iu, iu_t, feat_users[m]) for m in features}
        id_users, id_items = {}, {}
        for m in self.modality_names:
            (mu, mu_t), (mi, mi_t) = self._modality_graph(m)
            id_users[m] = prop(mu, mu_t, self.item_embedding)
            id_items[m] = prop(mi, mi_t, self.user_embedding)
        fuse = lambda views: torch.stack(  # noqa: E731 - what the degenerate attention computes
            [torch.cat([v] * self.head_num, dim=1) @ self.fusion for v in views]
        ).mean(0)
        u = self.user_embedding + self.id_cat_rate * F.normalize(fuse(id_users.values()), dim=1)
        i = self.item_embedding + self.id_cat_rate * F.normalize(fuse(id_items.values()), dim=1)
        users_layers, items_layers = [u], [i]
        for layer in range(self.n_ui_layers):
            u = prop(ui, ui_t, i)
            if layer == self.n_ui_layers - 1:
                u = torch.softmax(u, dim=-1)
            i = prop(iu, iu_t, u)
            if layer == self.n_ui_layers - 1:
                i = torch.softmax(i, dim=-1)
            users_layers.append(u)
            items_layers.append(i)
        u = torch.stack(users_layers).mean(0) + self.model_cat_rate * sum(F.normalize(f, dim=1) for f in feat_users.values())
        i = torch.stack(items_layers).mean(0) + self.model_cat_rate * sum(F.normalize(f, dim=1) for f in feat_items.values())
        return {"users": u, "items": i, "feat_users": feat_users, "feat_items": feat_items, "id_users": id_users}

    def masked_similarity(self, users: torch.Tensor, user_table: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """``normalize(U[u] I^T ⊙ (1 - R[u]))``: a user's scores of the items it has not trained on."""
        seen = self.interactions.index_select(0, users).to_dense()
        return F.normalize((user_table.index_select(0, users) @ item_table.T) * (1 - seen), dim=1)

    # --- discriminator --------------------------------------------------------------------------
    def real_rows(self, users: torch.Tensor, cf_similarity: torch.Tensor) -> torch.Tensor:
        seen = self.interactions.index_select(0, users).to_dense()
        noise = torch.rand_like(seen)
        logits = seen - self.log_log_scale * torch.log(-torch.log(noise + 1e-8) + 1e-8)
        real = torch.softmax(logits / self.real_data_tau, dim=1) + cf_similarity * self.ui_pre_scale
        return F.normalize(real, dim=1)

    def discriminator_step(self, users: torch.Tensor) -> float:
        """One Adam step of ``D`` on this batch (generator outputs detached); returns its loss."""
        with torch.no_grad():
            out = self.forward_all()
            fake = torch.cat([self.masked_similarity(users, out["feat_users"][m], out["feat_items"][m])
                              for m in self.modality_names])
            real = self.real_rows(users, self.masked_similarity(users, out["users"], out["items"]))
            real = torch.cat([real] * len(self.modality_names))
        critic = self.discriminator
        loss = -critic(real).mean() + critic(fake).mean()
        if self.gradient_penalty_weight:
            loss = loss + self.gradient_penalty_weight * gradient_penalty(critic, real, fake)
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.discriminator_optimizer.step()
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def self_stepped_parameters(self) -> list[nn.Parameter]:
        return list(self.discriminator.parameters())

    # --- modality graph augmentation ------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self._batch = 0

    def augment_graphs(self, users: torch.Tensor, out: dict[str, Any]) -> None:
        """The reference's schedule: rebuild every ``graph_refresh_batches``-th batch (not the
        first of an epoch) from what was gathered, else gather this batch's top-k."""
        batch = self._batch
        self._batch += 1
        if batch % self.graph_refresh_batches == 0 and batch != 0:
            for m in self.modality_names:
                gathered = self._gathered[m]
                rows = torch.cat([g[0] for g in gathered]) if gathered else users.new_zeros(0)
                cols = torch.cat([g[1] for g in gathered]) if gathered else users.new_zeros(0)
                self._install_modality_edges(m, rows, cols)
                self._gathered[m] = []
            return
        k = int(self.n_items * self.graph_topk_rate)
        for m in self.modality_names:
            if k == 0:
                continue
            with torch.no_grad():
                sim = self.masked_similarity(users, out["feat_users"][m], out["feat_items"][m])
                top = torch.topk(sim, k, dim=1).indices
            self._gathered[m].append((users.repeat_interleave(k), top.reshape(-1)))

    # --- contract -------------------------------------------------------------------------------
    def loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor) -> torch.Tensor:
        if self.adversarial_weight:
            self.discriminator_step(users)
        out = self.forward_all()
        u = out["users"].index_select(0, users)
        p, n = out["items"].index_select(0, pos_items), out["items"].index_select(0, neg_items)
        loss = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        loss = loss + self.reg_weight * 0.5 * (u.square().sum() + p.square().sum() + n.square().sum()) / len(users)
        feat_reg = sum(t.square().sum() for t in (*out["feat_users"].values(), *out["feat_items"].values()))
        loss = loss + self.feat_reg_weight * 0.5 * feat_reg / self.n_items
        self.augment_graphs(users, out)
        if self.cl_weight:
            cl = sum(grace_loss(v.index_select(0, users), u, self.temperature) for v in out["id_users"].values())
            loss = loss + self.cl_weight * cl
        if self.adversarial_weight:
            fake = torch.cat([self.masked_similarity(users, out["feat_users"][m], out["feat_items"][m])
                              for m in self.modality_names])
            for q in self.discriminator.parameters():
                q.requires_grad_(False)  # the generator's step builds no gradient for D's weights
            try:
                loss = loss - self.adversarial_weight * self.discriminator(fake).mean()
            finally:
                for q in self.discriminator.parameters():
                    q.requires_grad_(True)
        return loss

    def prepare_scoring(self) -> None:
        out = self.forward_all()
        self._cache = (out["users"], out["items"])

    def score(self, users: torch.Tensor) -> torch.Tensor:
        if self._cache is None:
            self.prepare_scoring()
        user_all, item_all = self._cache
        return user_all[users] @ item_all.T

    def finish_scoring(self) -> None:
        self._cache = None

    # --- checkpoint -----------------------------------------------------------------------------
    def extra_state_for_checkpoint(self) -> dict[str, Any]:
        cpu = lambda t: t.detach().cpu()  # noqa: E731
        return {
            "discriminator_optimizer": self.discriminator_optimizer.state_dict(),
            "batch": self._batch,
            "modality_edges": {m: [cpu(e[0]), cpu(e[1])] for m, e in self._modality_edges.items() if e is not None},
            "gathered": {m: [[cpu(a), cpu(b)] for a, b in g] for m, g in self._gathered.items()},
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])
        self._batch = int(state["batch"])
        device = self.train_users.device
        for m in self.modality_names:
            edges = state["modality_edges"].get(m)
            if edges is None:
                self._modality_edges[m] = None
            else:
                self._install_modality_edges(m, edges[0], edges[1])
            self._gathered[m] = [(a.to(device), b.to(device)) for a, b in state["gathered"].get(m, [])]
