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

import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from same_weights import compare, reference_model, tiktok_and_reference  # noqa: E402

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
    args, dataset, load = tiktok_and_reference(__doc__.splitlines()[0], argv)
    ref = reference_model(load, args.reference_src, dataset, "slmrec", REFERENCE_POINT)
    # Plain tensor attributes, which .double() leaves as they are.
    ref.v_feat, ref.t_feat, ref.norm_adj = ref.v_feat.double(), ref.t_feat.double(), ref.norm_adj.double()
    as_text = dataclasses.replace(dataset, features={"image": dataset.features["image"],
                                                     "text": dataset.features["audio"]})
    ours = build_model("slmrec", as_text, {**POINT, "weight_decay": 0.0}).double()
    result = ours.load_state_dict(copied_state(ref), strict=False)
    if result.unexpected_keys or any(not k.startswith("projection.") for k in result.missing_keys):
        raise SystemExit(f"weights did not map one to one: {result}")

    ref_params = dict(ref.named_parameters())
    names = {"user_embedding": "embedding_user.weight", "item_embedding": "embedding_item.weight",
             "user_fusion.weight": "embedding_user_after_GCN.weight",
             "item_fusion.weight": "embedding_item_after_GCN.weight",
             "encoders.image.weight": "v_dense.weight", "encoders.text.weight": "t_dense.weight",
             "chain_heads.image.weight": "g_i_iv.weight", "modality_heads.image.weight": "g_v_iv.weight",
             "modality_heads.text.weight": "g_t_ivat.weight"}
    # MMRec scores with the embeddings of its last loss call and a sigmoid; undo the sigmoid.
    compare(ours, ref, dataset, args.batch_size, {ours_name: ref_params[theirs] for ours_name, theirs in names.items()},
            reference_scores=torch.logit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
