"""Our SLMRec and MMRec's with the same weights on one batch: loss, gradients and scores.

MMRec's SLMRec has a visual and a textual slot only; ``bench_reference.prepare_reference_data``
gives it TikTok's image as visual and audio as textual features. Ours is given the same audio
under the name ``text``, so both build the same FAC chain (image stage ``d`` wide, then the coarse
``d/2`` text stage). MMRec's weights are copied into ours, its ``g_iv_iva`` and ``g_iva_ivat``
(two linear maps in a row) folded into our one text chain head, both models in float64, weight
decay off (the trainer-side term is checked in tests/benchmarks/test_reference_quality.py).
Any difference printed is then the two models' code.

    python benchmarks/slmrec_same_weights.py --data ../shared/data/tiktok --reference-src MMRec/src \\
        --reference-site ref_site
"""

from __future__ import annotations

import argparse
import dataclasses
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

POINT = {"ssl_temperature": 0.1, "ssl_weight": 0.01}  # Table 2's SLMRec point on TikTok
REFERENCE_POINT = {"ssl_temp": 0.1, "ssl_alpha": 0.01}


def copied_state(ref) -> dict[str, torch.Tensor]:
    """MMRec's SLMRec parameters under our names."""
    state = {"user_embedding": ref.embedding_user.weight, "item_embedding": ref.embedding_item.weight}
    linears = {"user_fusion": ref.embedding_user_after_GCN, "item_fusion": ref.embedding_item_after_GCN,
               "chain_heads.image": ref.g_i_iv, "modality_heads.image": ref.g_v_iv,
               "modality_heads.text": ref.g_t_ivat, "encoders.image": ref.v_dense, "encoders.text": ref.t_dense}
    for name, lin in linears.items():
        state[f"{name}.weight"], state[f"{name}.bias"] = lin.weight, lin.bias
    w1, b1, w2, b2 = ref.g_iv_iva.weight, ref.g_iv_iva.bias, ref.g_iva_ivat.weight, ref.g_iva_ivat.bias
    state["chain_heads.text.weight"], state["chain_heads.text.bias"] = w2 @ w1, w2 @ b1 + b2
    return {k: v.detach().clone() for k, v in state.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--reference-src", type=Path, required=True, help="a checkout of MMRec's src/")
    ap.add_argument("--reference-site", type=Path, default=None, help="extra import directory")
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
        config = reference_config(args.reference_src, "SLMRec", folder, dataset.name,
                                  {**REFERENCE_POINT, "learning_rate": 1e-3, "seed": 0})
        with reference_build_compat():
            ref = load("SLMRec")(config, ReferenceTrainData(dataset)).double()
    # Plain tensor attributes, which .double() leaves as they are.
    ref.v_feat, ref.t_feat, ref.norm_adj = ref.v_feat.double(), ref.t_feat.double(), ref.norm_adj.double()
    as_text = dataclasses.replace(dataset, features={"image": dataset.features["image"],
                                                     "text": dataset.features["audio"]})
    ours = build_model("slmrec", as_text, {**POINT, "weight_decay": 0.0}).double()
    result = ours.load_state_dict(copied_state(ref), strict=False)
    if result.unexpected_keys or any(not k.startswith("projection.") for k in result.missing_keys):
        raise SystemExit(f"weights did not map one to one: {result}")

    g = torch.Generator().manual_seed(1)
    users, pos, neg = (torch.randint(0, n, (args.batch_size,), generator=g)
                       for n in (dataset.n_users, dataset.n_items, dataset.n_items))
    ours_loss = ours.loss(users, pos, neg)
    ours_loss.backward()
    ref_loss = ref.calculate_loss(torch.stack((users, pos, neg)))
    ref_loss.backward()
    print(f"loss: ours {ours_loss.item():.12f}  MMRec {ref_loss.item():.12f}")
    ref_params = dict(ref.named_parameters())
    names = {"user_embedding": "embedding_user.weight", "item_embedding": "embedding_item.weight",
             "user_fusion.weight": "embedding_user_after_GCN.weight",
             "item_fusion.weight": "embedding_item_after_GCN.weight",
             "encoders.image.weight": "v_dense.weight", "encoders.text.weight": "t_dense.weight",
             "chain_heads.image.weight": "g_i_iv.weight", "modality_heads.image.weight": "g_v_iv.weight",
             "modality_heads.text.weight": "g_t_ivat.weight"}
    for ours_name, param in ours.named_parameters():
        if ours_name in names:
            theirs = ref_params[names[ours_name]].grad
            print(f"gradient {ours_name:28s} max |ours - MMRec| {(param.grad - theirs).abs().max().item():.2e}"
                  f"  (max |MMRec| {theirs.abs().max().item():.2e})")
    with torch.no_grad():
        ours.prepare_scoring()
        mine = ours.score(users[:512])
        ours.finish_scoring()
        # MMRec scores with the embeddings of its last loss call and a sigmoid; undo the sigmoid.
        theirs = torch.logit(ref.full_sort_predict([users[:512], None]))
    print(f"scores max |ours - MMRec| {(mine - theirs).abs().max().item():.2e}"
          f"  (max |MMRec| {theirs.abs().max().item():.2e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
