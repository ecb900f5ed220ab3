"""Shared base for models that read item features: per-modality encoders and the projection hook.

Every feature-using model (the twelve multimodal ones, from ``vbpr`` to ``clear``) gets from this base:

* the raw features of every modality as buffers (or parameters when ``trainable_features``),
  so ``model.to(device)`` moves them; ``feature_centering`` subtracts each modality's mean item
  vector first (and the kNN item graph is then built from the centred features);
  ``encoded_centering`` subtracts each modality's mean item embedding after the encoder, at
  every forward pass (trainable features and the encoder's bias can learn a shared component
  back, and raw-feature centring cannot remove that);
* one encoder per modality (``encoder_layers`` = 1: a linear map to ``embedding_size``; 2: an
  MLP with a LeakyReLU in between);
* CLEAR's cross-modal projection (:mod:`clear_core.projection`) on the ``projected_pair`` of
  modalities, switched by the ``projection`` parameter (``none`` | ``fixed`` | ``dynamic``) and
  refreshed in :meth:`on_epoch_start` from the current encoder outputs. Because it lives here,
  ``--model vbpr --set projection=fixed`` turns a baseline into its "+ CLEAR" variant without
  a line of model-specific code (paper Section 4.5.2);
* MRdIB (:mod:`clear_core.mrdib`), the second redundancy-aware plug-in, switched by ``mrdib``:
  an information bottleneck on the same encoded features (after the projection when both are
  on) and its auxiliary loss, added by :meth:`training_loss` (what the trainer calls).

Both plug-ins act on what :meth:`encode` returns, so every model that reads its modality
features through :meth:`encode` gets them; their defaults (both off) live in
``configs/plugins.yaml`` and fill in whatever a model's YAML leaves out
(:meth:`shared_defaults`), so a model's configuration needs no plug-in keys. Switched off, a
plug-in adds no parameter and draws no random number (the projection's module stays, with its
buffers and a zero-width basis; MRdIB builds none): the model is bit-for-bit the one without it.

Subclasses call :meth:`encode` to get the (projected) modality features of all or some items
and must call ``super().on_epoch_start(epoch)`` if they override it.

Encoder initialisation, a departure every subclass shares: Xavier-uniform weights and zero
biases for every model, where MMRec's encoders differ by model (nn.Linear's own draw, Kaiming-
uniform weights and uniform ±1/√d_in biases, for FREEDOM, LATTICE, MGCN, DualGNN and MMGCN;
Xavier-uniform (SLMRec) or Xavier-normal (BM3) weights with nn.Linear's biases; Xavier-normal with
zero biases for VBPR; Xavier-uniform without a bias for LGMRec, as here). One initialisation keeps the CLEAR and
MRdIB plug-ins acting on encoders of the same scale in every model. Trained through the same
trainer beside MMRec's own classes (``benchmarks/reference_quality.py``, benchmarks/RESULTS.md),
FREEDOM, MGCN and DualGNN land within seed noise of the reference; for BM3 the encoders' biases
moved test Recall@20 by 0.001 on one seed (0.0903 against 0.0914), inside its seed spread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from clear_core.config import config_dir, load_yaml
from clear_core.data.dataset import Dataset
from clear_core.errors import ConfigError
from clear_core.models.base import Recommender
from clear_core.models.projected_linear import projected_linear
from clear_core.mrdib import MRDIB_PARAMS, MRdIB
from clear_core.param_rules import knn_problem, range_problems
from clear_core.projection import MODES, CrossModalProjection, validate_projection

MULTIMODAL_PARAMS: dict[str, Any] = {
    "embedding_size": int,
    "encoder_layers": int,
    "trainable_features": bool,
    "feature_scaling": str,
    "feature_centering": bool,
    "encoded_centering": bool,
    "projection": str,
    "redundancy_rank": int,
    "projection_strength": float,
    "refresh_every": int,
    "energy_ratio": float,
    "projected_pair": (list, type(None)),
    **MRDIB_PARAMS,
}

#: Defaults of the plug-in parameters, under every multimodal model's own YAML.
PLUGIN_DEFAULTS_FILE = "plugins.yaml"


#: ``none``: raw features as given (MMRec); ``unit``: each modality divided by its mean row norm.
FEATURE_SCALINGS = ("none", "unit")


def default_pair(modalities: list[str]) -> list[str]:
    """``["image", "text"]`` when both exist, else the first two modalities."""
    if "image" in modalities and "text" in modalities:
        return ["image", "text"]
    return list(modalities[:2])


def mix_weights(
    modalities: list[str], weights: Mapping[str, Any] | None, field: str = "modality_weights"
) -> tuple[dict[str, float], list[str]]:
    """Normalised per-modality weights for the item-item graph mix, and problems found.

    ``weights`` names a weight per modality (FREEDOM: image 0.1, text 0.9); entries for
    modalities the dataset lacks are ignored, so one default serves Amazon (image + text) and
    TikTok (image + audio). Every modality of the dataset needs an entry.
    """
    problems = []
    if weights is None:
        return {m: 1.0 / len(modalities) for m in modalities}, problems
    missing = [m for m in modalities if m not in weights]
    if missing:
        problems.append(
            f"{field}: no weight for modality {', '.join(missing)}; "
            f"got weights for {', '.join(sorted(weights)) or 'none'}"
        )
        return {}, problems
    raw = {}
    for m in modalities:
        w = weights[m]
        if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0:
            problems.append(f"{field}.{m}: expected a number >= 0, got {w!r}")
        else:
            raw[m] = float(w)
    total = sum(raw.values())
    if not problems and total <= 0:
        problems.append(f"{field}: weights of {', '.join(modalities)} sum to 0")
    if problems:
        return {}, problems
    return {m: w / total for m, w in raw.items()}, problems


class MultimodalRecommender(Recommender):
    """Base of the feature-using models; see the module docstring."""

    needs_features: ClassVar[bool] = True

    def __init__(self, dataset: Dataset, **params: Any) -> None:
        super().__init__(dataset, **params)
        self.modality_names = list(dataset.features)
        d = params["embedding_size"]
        problems: list[str] = []
        if not self.modality_names:
            problems.append(f"dataset {dataset.name!r}: model {self.name!r} needs modality features")
        problems += range_problems(params)
        if params["feature_scaling"] not in FEATURE_SCALINGS:
            problems.append(
                f"feature_scaling: expected one of {', '.join(FEATURE_SCALINGS)}, got {params['feature_scaling']!r}"
            )
        for m, feat in dataset.features.items():
            if feat.ndim != 2 or feat.shape[0] != dataset.n_items:
                problems.append(
                    f"features[{m}]: expected shape ({dataset.n_items}, d), got {tuple(feat.shape)}"
                )
            elif not torch.isfinite(torch.as_tensor(feat)).all():
                problems.append(f"features[{m}]: expected finite values, found NaN or inf")
        pair = params["projected_pair"]
        if pair is None:
            pair = default_pair(self.modality_names)
        pair = list(pair)
        if params["projection"] != "none":
            if len(pair) != 2 or len(set(pair)) != 2:
                problems.append(
                    f"projected_pair: expected two different modality names, got {pair!r}"
                    + (" (the dataset has one modality)" if len(self.modality_names) < 2 else "")
                )
            unknown = [m for m in pair if m not in self.modality_names]
            if unknown:
                problems.append(
                    f"projected_pair: unknown modality {', '.join(map(str, unknown))}; "
                    f"dataset has {', '.join(self.modality_names)}"
                )
        try:
            validate_projection(
                mode=params["projection"],
                redundancy_rank=params["redundancy_rank"],
                projection_strength=params["projection_strength"],
                refresh_every=params["refresh_every"],
                energy_ratio=params["energy_ratio"],
                dims=None if range_problems({"embedding_size": d}) else (self.encoded_size(params),) * 2,
            )
        except ConfigError as exc:
            problems.extend(exc.problems)
        problems.extend(self.check_params(dataset, params))
        if problems:
            # The same rule reached twice (here and in validate_projection or graph_problems)
            # gives the same words: list it once.
            raise ConfigError(list(dict.fromkeys(problems)), source=f"model {self.name!r}")

        self.embedding_size = d
        d_enc = self.encoded_size(params)
        self.projected_pair = pair if params["projection"] != "none" else []
        self.raw_features = nn.ParameterDict() if params["trainable_features"] else None
        self.encoders = nn.ModuleDict()
        self.feature_centering = params["feature_centering"]
        self.encoded_centering = params["encoded_centering"]
        for m in self.modality_names:
            feat = self.input_features(dataset, m).clone()
            if params["feature_scaling"] == "unit":
                # One scalar per modality: geometry, covariance directions and cosine kNN are
                # unchanged, but a modality with row norms ~30 (TikTok image) no longer starts
                # training with saturated BPR scores. Where float32 norms overflow (squares of
                # values near 1e19 and above), float64 ones are used: an inf scale would zero
                # every row. Ordinary features keep the float32 arithmetic and its bits.
                scale = feat.norm(dim=1).mean()
                if torch.isfinite(scale):
                    feat = feat / scale.clamp_min(1e-12)
                else:
                    wide = feat.double()
                    feat = (wide / wide.norm(dim=1).mean()).float()
            if self.raw_features is not None:
                self.raw_features[m] = nn.Parameter(feat)
            else:
                # Derived from the dataset: not saved in checkpoints (they can be large).
                self.register_buffer(f"features_{m}", feat, persistent=False)
            self.encoders[m] = self._encoder(feat.shape[1], d_enc, params["encoder_layers"])
        self.projection = CrossModalProjection(
            d_enc,
            d_enc,
            mode=params["projection"],
            redundancy_rank=params["redundancy_rank"],
            projection_strength=params["projection_strength"],
            refresh_every=params["refresh_every"],
            energy_ratio=params["energy_ratio"],
        )
        self.mrdib: MRdIB | None = None
        if params["mrdib"]:
            # A forked generator: the plug-in's initial weights leave the backbone's draws as
            # they are, so a base and its + MRdIB variant start from the same backbone weights.
            with torch.random.fork_rng(devices=[]):
                self.mrdib = MRdIB(
                    self.modality_names,
                    d_enc,
                    self.n_users,
                    kl_weight=params["mrdib_kl_weight"],
                    unique_weight=params["mrdib_unique_weight"],
                    redundancy_weight=params["mrdib_redundancy_weight"],
                    synergy_weight=params["mrdib_synergy_weight"],
                    redundancy_estimator=params["mrdib_redundancy_estimator"],
                )

    @classmethod
    def shared_defaults(cls) -> dict[str, Any]:
        """The plug-ins' defaults (``configs/plugins.yaml``); a model's YAML overrides them."""
        return load_yaml(config_dir() / PLUGIN_DEFAULTS_FILE)

    # --- hooks for subclasses -----------------------------------------------------------------
    def check_params(self, dataset: Dataset, params: Mapping[str, Any]) -> list[str]:
        """Problems with model-specific parameters (reported with the shared ones)."""
        return []

    def encoded_size(self, params: Mapping[str, Any]) -> int:
        """Width of every encoder output, and so of the projector: ``embedding_size`` unless a
        model's first learned transform is wider (MMGCN's 256-d latent, DualGNN's 4d MLP)."""
        return params["embedding_size"]

    @staticmethod
    def _encoder(d_in: int, d_out: int, layers: int) -> nn.Module:
        if layers == 1:
            enc: nn.Module = nn.Linear(d_in, d_out)
        else:
            enc = nn.Sequential(nn.Linear(d_in, d_out), nn.LeakyReLU(), nn.Linear(d_out, d_out))
        for mod in enc.modules():
            if isinstance(mod, nn.Linear):
                nn.init.xavier_uniform_(mod.weight)
                nn.init.zeros_(mod.bias)
        return enc

    # --- features -----------------------------------------------------------------------------
    def input_features(self, dataset: Dataset, modality: str) -> torch.Tensor:
        """The dataset's features of ``modality`` as float32, centred when ``feature_centering``.

        Both the encoders and the kNN item graph read these. Centring removes the component
        every item shares: left in, it dominates cosine similarity, and the user-item
        propagation weights a direction common to all items by degree, which can push popular
        items to the top of every ranking (the TikTok rank profile in benchmarks/RESULTS.md).
        """
        feat = torch.as_tensor(dataset.features[modality], dtype=torch.float32)
        if self.feature_centering:
            feat = feat - feat.mean(dim=0, keepdim=True)
        return feat

    def raw(self, modality: str) -> torch.Tensor:
        if self.raw_features is not None:
            return self.raw_features[modality]
        return getattr(self, f"features_{modality}")

    def encode(self, items: torch.Tensor | None = None, *, bottleneck: bool = True) -> dict[str, torch.Tensor]:
        """Encoded features of ``items`` (all items when None), projected on the configured pair,
        then through MRdIB's bottleneck when it is on (a sample in training, the mean in
        evaluation; ``bottleneck=False`` gives the mean always).

        With ``encoded_centering`` each modality's encoder output is centred over all items
        first. Two reasons: the projector is then applied to exactly the centred matrix whose
        covariance it was built from (Algorithm 1, line 4), and no vector shared by every item
        reaches the user-item graph, where propagation scales it by each item's degree and so
        lifts popular items in every user's ranking (benchmarks/RESULTS.md, TikTok).

        The projection is row-wise linear, so projecting a subset of rows equals projecting all
        rows and then selecting: baselines that only need the batch's items encode only those.
        """
        # Centring needs the mean over ALL items, so then a subset costs a full encoding.
        whole = items is None or self.encoded_centering
        rows = {m: self.raw(m) if whole else self.raw(m).index_select(0, items) for m in self.modality_names}
        if isinstance(self.encoders[self.modality_names[0]], nn.Linear):
            # Every encoder is linear (encoder_layers is one setting for all): encoder,
            # centring and projection in one autograd node per modality, the same numbers as
            # the general path below.
            bases = self.projection.current_bases()
            basis_of = dict(zip(self.projected_pair, bases, strict=True)) if bases is not None else {}
            out = {
                m: projected_linear(x, self.encoders[m].weight, self.encoders[m].bias, basis_of.get(m),
                                    self.projection.projection_strength, center=self.encoded_centering)
                for m, x in rows.items()
            }
        else:
            out = {m: self.encoders[m](x) for m, x in rows.items()}
            if self.encoded_centering:
                out = {m: x - x.mean(dim=0, keepdim=True) for m, x in out.items()}
            if self.projected_pair:
                a, b = self.projected_pair
                out[a], out[b] = self.projection(out[a], out[b])
        if self.encoded_centering and items is not None:
            out = {m: x.index_select(0, items) for m, x in out.items()}
        if self.mrdib is not None and bottleneck:
            out = self.mrdib.compress(out)
        return out

    def training_loss(self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor) -> torch.Tensor:
        """The model's :meth:`loss`, plus MRdIB's auxiliary loss on the batch's items when on."""
        loss = self.loss(users, pos_items, neg_items)
        if self.mrdib is None:
            return loss
        means = self.encode(torch.cat([pos_items, neg_items]), bottleneck=False)
        return loss + self.mrdib.loss(means, users)

    def on_epoch_start(self, epoch: int) -> None:
        """Refresh the projector at epochs 1, 1+τ, 1+2τ, ... (see :meth:`refresh_projection`)."""
        self.refresh_projection(epoch)

    def epoch_diagnostics(self) -> dict[str, float]:
        """The projector's last refresh (:meth:`CrossModalProjection.diagnostics`) as
        ``projection/<figure>``: how k and the cross-covariance spectrum move over training;
        with MRdIB on, its bottleneck's noise level as ``mrdib/<figure>``."""
        out = {f"projection/{k}": v for k, v in self.projection.diagnostics().items()}
        if self.mrdib is not None:
            out.update({f"mrdib/{k}": v for k, v in self.mrdib.diagnostics().items()})
        return out

    def refresh_projection(self, epoch: int) -> bool:
        """Rebuild the projector from the current encoder outputs if it is due at ``epoch``
        (1, 1+τ, 1+2τ, ...); True when it was. Callable on its own so benchmarks can time it."""
        if not self.projection.needs_refresh(epoch):
            return False
        with torch.no_grad():
            a, b = self.projected_pair
            self.projection.refresh(self.encoders[a](self.raw(a)), self.encoders[b](self.raw(b)), epoch)
        return True


class GraphMixin:
    """User-item graph (full, and degree-sensitively dropped each epoch) and the frozen kNN
    item-item graph, shared by FREEDOM and CLEAR. Graphs are non-persistent buffers: they are
    rebuilt from the dataset, move with ``.to(device)`` and stay out of checkpoints."""

    def setup_graphs(self, dataset: Dataset, params: Mapping[str, Any], modality_weights: Mapping[str, float]) -> None:
        """The graphs and the settings that shape them, from the model's ``GRAPH_PARAMS``:
        ``n_layers``, ``item_graph_layers``, ``edge_dropout``, ``knn_k`` and ``knn_chunk_size``."""
        from clear_core.graph import edge_weights, normalized_adjacency
        from clear_core.item_graph import mixed_item_graph, to_csr_pair

        train = torch.as_tensor(dataset.train, dtype=torch.long)
        users, items = train[:, 0].contiguous(), train[:, 1].contiguous()
        self.n_layers = params["n_layers"]
        self.item_graph_layers = params["item_graph_layers"]
        self.edge_dropout = params["edge_dropout"]
        self.register_buffer("train_users", users, persistent=False)
        self.register_buffer("train_items", items, persistent=False)
        self.register_buffer(
            "edge_weight", edge_weights(users, items, self.n_users, self.n_items), persistent=False
        )
        self.register_buffer(
            "adjacency", normalized_adjacency(dataset.train, self.n_users, self.n_items), persistent=False
        )
        raw = {m: self.input_features(dataset, m) for m in modality_weights}
        knn = mixed_item_graph(raw, modality_weights, params["knn_k"], params["knn_chunk_size"])
        item_graph, item_graph_t = to_csr_pair(knn)
        self.register_buffer("item_graph", item_graph, persistent=False)
        self.register_buffer("item_graph_t", item_graph_t, persistent=False)
        self._epoch_adjacency: torch.Tensor | None = None

    def on_epoch_start(self, epoch: int) -> None:
        """The model's own epoch start (the projector refresh), then this epoch's dropped graph."""
        super().on_epoch_start(epoch)
        self.drop_edges()

    def drop_edges(self) -> None:
        """Resample this epoch's user-item graph (done by ``on_epoch_start``)."""
        from clear_core.graph import dropped_adjacency

        if self.edge_dropout <= 0.0:
            self._epoch_adjacency = None
            return
        self._epoch_adjacency = dropped_adjacency(
            self.train_users, self.train_items, self.edge_weight, self.n_users, self.n_items,
            self.edge_dropout,
        )

    @staticmethod
    def propagate_users_items(adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``adjacency @ x`` for the symmetric user-item graph (cheap, deterministic backward)."""
        from clear_core.graph import symmetric_propagate

        return symmetric_propagate(adjacency, x)

    def layer_mean(self, adjacency: torch.Tensor, ego: torch.Tensor) -> torch.Tensor:
        """LightGCN's output: the mean of ``ego`` propagated 0..``n_layers`` times over ``adjacency``."""
        total, h = ego, ego
        for _ in range(self.n_layers):
            h = self.propagate_users_items(adjacency, h)
            total = total + h
        return total / (self.n_layers + 1)

    def propagate_items(self, x: torch.Tensor) -> torch.Tensor:
        """``item_graph @ x`` (the kNN graph is not symmetric: backward uses its transpose)."""
        from clear_core.item_graph import propagate_with_transpose

        return propagate_with_transpose(self.item_graph, self.item_graph_t, x)

    def training_adjacency(self) -> torch.Tensor:
        adj = self._epoch_adjacency
        if adj is None or not self.training or adj.device != self.adjacency.device:
            return self.adjacency
        return adj


def graph_problems(params: Mapping[str, Any], dataset: Dataset | None = None) -> list[str]:
    """Range checks of the graph parameters shared by FREEDOM and CLEAR (rules in
    :mod:`clear_core.param_rules`); with ``dataset``, also knn_k against its item count."""
    problems = range_problems({k: params[k] for k in GRAPH_PARAMS if k in params})
    if dataset is not None and (p := knn_problem(params["knn_k"], dataset.n_items, dataset.name)):
        problems.append(p)
    return problems


GRAPH_PARAMS: dict[str, Any] = {
    "n_layers": int,
    "item_graph_layers": int,
    "knn_k": int,
    "knn_chunk_size": int,
    "edge_dropout": float,
    "reg_weight": float,
    "modality_weights": (dict, type(None)),
}

__all__ = [
    "GRAPH_PARAMS",
    "MODES",
    "MULTIMODAL_PARAMS",
    "GraphMixin",
    "MultimodalRecommender",
    "default_pair",
    "graph_problems",
    "mix_weights",
]
