"""Small generated datasets and a plain training loop for the multimodal model tests.

The loop is deliberately independent of ``clear_core.trainer``: these tests specify the model
contract (loss, hooks, scoring), not the trainer.
"""

from __future__ import annotations

import functools

import torch

from clear_core.data.synthetic import generate_synthetic


@functools.lru_cache(maxsize=4)
def tiny_dataset(modalities: tuple[tuple[str, int], ...] = (("image", 24), ("text", 16))):
    names = [name for name, _ in modalities]
    pair = ["image", "text"] if {"image", "text"} <= set(names) else names[:2]
    extra = {"modality_pair": pair} if len(names) >= 2 else {}
    return generate_synthetic(
        n_users=120, n_items=90, n_interactions=2400, modalities=dict(modalities), seed=7, **extra
    ).dataset


def train_epochs(model, dataset, epochs: int, *, lr: float = 0.01, batch: int = 512, seed: int = 0):
    """Mean training loss (:meth:`training_loss`: the model's loss plus its plug-ins') per epoch,
    with uniform negatives (drawn on CPU, so the same on any
    device, and moved to the model's device as the trainer does)."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.trained_parameters(), lr=lr)
    train = torch.as_tensor(dataset.train)
    losses = []
    for epoch in range(1, epochs + 1):
        model.train()
        model.on_epoch_start(epoch)
        order = torch.randperm(len(train))
        total, steps = 0.0, 0
        for start in range(0, len(train), batch):
            rows = train[order[start : start + batch]]
            neg = torch.randint(0, dataset.n_items, (len(rows),))
            loss = model.training_loss(*(t.to(model.device) for t in (rows[:, 0], rows[:, 1], neg)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        losses.append(total / steps)
    return losses


def all_scores(model, dataset) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        model.prepare_scoring()
        scores = model.score(torch.arange(dataset.n_users, device=model.device))
        model.finish_scoring()
    return scores
