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

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from same_weights import compare, reference_model, tiktok_and_reference  # noqa: E402

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
    args, dataset, load = tiktok_and_reference(__doc__.splitlines()[0], argv)
    ref = reference_model(load, args.reference_src, dataset, "mmgcn", {"reg_weight": POINT["reg_weight"]})
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
    # MMRec scores with the representation of its last loss call (the same weights here).
    compare(ours, ref, dataset, args.batch_size, theirs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
