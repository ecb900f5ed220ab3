"""Our MMGCN and MMRec's with the same weights on one batch: loss, gradients and scores.

``bench_reference.prepare_reference_data`` gives MMRec's MMGCN TikTok's image as its visual
features (mapped to the 256-d latent) and the audio as its textual ones, which it feeds raw. Ours
is built with ``raw_modalities: [audio]``, MMRec's structure, and given MMRec's weights, its ID
table and preferences (plain tensors there, frozen buffers here); both in float64. Any difference
printed is then the two models' code; a gap in quality between them comes from initialisation,
the random draws, or ours mapping audio to the latent by default. The losses differ by
``reg_weight`` x mean(P_audio²) (about 2e-8): MMRec penalises the visual preference only, ours
every modality's, a constant while the preferences are frozen (no gradient differs).

    python benchmarks/mmgcn_same_weights.py --data ../shared/data/tiktok --reference-src MMRec/src \\
        --reference-site ref_site
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_reference import (  # noqa: E402
    ReferenceTrainData,
    import_reference,
    prepare_reference_data,
    reference_build_compat,
    reference_config,
)

from clear_core.data.loading import load_dataset  # noqa: E402
from clear_core.models import build_model  # noqa: E402

POINT = {"reg_weight": 1e-4, "raw_modalities": ["audio"]}  # Table 2's MMGCN point, MMRec's structure


def layer_names(modality: str, gcn) -> dict[str, torch.Tensor]:
    """One MMRec ``GCN``'s three layers under our names."""
    out = {}
    for i in range(3):
        out[f"layers.{modality}.{i}.conv"] = getattr(gcn, f"conv_embed_{i + 1}").weight
        for ours, theirs in (("linear", "linear_layer"), ("gate", "g_layer")):
            lin = getattr(gcn, f"{theirs}{i + 1}")
            out[f"layers.{modality}.{i}.{ours}.weight"] = lin.weight
            out[f"layers.{modality}.{i}.{ours}.bias"] = lin.bias
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--reference-src", type=Path, required=True, help="a checkout of MMRec's src/")
    ap.add_argument("--reference-site", type=Path, default=None, help="extra import directory (torch_geometric)")
    ap.add_argument("--batch-size", type=int, default=2048)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    dataset = load_dataset(args.data)
    if set(dataset.features) != {"image", "audio"}:
        ap.error(f"{args.data}: expected image and audio features (TikTok), found {sorted(dataset.features)}")
    load = import_reference(args.reference_src, args.reference_site)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        prepare_reference_data(dataset, folder / dataset.name, with_user_graph=False)
        config = reference_config(args.reference_src, "MMGCN", folder, dataset.name,
                                  {"reg_weight": POINT["reg_weight"], "learning_rate": 1e-3, "seed": 0})
        with reference_build_compat():
            ref = load("MMGCN")(config, ReferenceTrainData(dataset)).double()
    # Plain tensor attributes, which .double() leaves as they are.
    ref.v_feat, ref.t_feat, ref.weight = ref.v_feat.double(), ref.t_feat.double(), ref.weight.double()
    ref.id_embedding = ref.id_embedding.detach().double().requires_grad_()
    for gcn in (ref.v_gcn, ref.t_gcn):
        gcn.preference = gcn.preference.detach().double()

    ours = build_model("mmgcn", dataset, POINT).double()
    theirs = {"id_embedding": ref.id_embedding, "preference_image": ref.v_gcn.preference,
              "preference_audio": ref.t_gcn.preference, "encoders.image.weight": ref.v_gcn.MLP.weight,
              "encoders.image.bias": ref.v_gcn.MLP.bias, **layer_names("image", ref.v_gcn),
              **layer_names("audio", ref.t_gcn)}
    result = ours.load_state_dict({k: v.detach().clone() for k, v in theirs.items()}, strict=False)
    # Our audio encoder exists but is not read (raw_modalities); the projection is off.
    unmapped = [k for k in result.missing_keys if not k.startswith(("projection.", "encoders.audio."))]
    if result.unexpected_keys or unmapped:
        raise SystemExit(f"weights did not map one to one: {result}")

    g = torch.Generator().manual_seed(1)
    users, pos, neg = (torch.randint(0, n, (args.batch_size,), generator=g)
                       for n in (dataset.n_users, dataset.n_items, dataset.n_items))
    ours_loss = ours.loss(users, pos, neg)
    ours_loss.backward()
    ref_loss = ref.calculate_loss(torch.stack((users, pos, neg)))
    ref_loss.backward()
    print(f"loss: ours {ours_loss.item():.12f}  MMRec {ref_loss.item():.12f}")
    for name, param in ours.named_parameters():
        if name in theirs:
            grad = theirs[name].grad
            print(f"gradient {name:28s} max |ours - MMRec| {(param.grad - grad).abs().max().item():.2e}"
                  f"  (max |MMRec| {grad.abs().max().item():.2e})")
    with torch.no_grad():
        ours.prepare_scoring()
        mine = ours.score(users[:512])
        ours.finish_scoring()
        # MMRec scores with the representation of its last loss call (the same weights here).
        reference = ref.full_sort_predict([users[:512], None])
    print(f"scores max |ours - MMRec| {(mine - reference).abs().max().item():.2e}"
          f"  (max |MMRec| {reference.abs().max().item():.2e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
