"""The recipe's optimizer: AdamW alone (classic), or Muon for the hidden matrices with AdamW for the rest (modern).

``RecipeOptimizer`` presents the pair as one optimizer with torch's state-dict layout: parameter
indices run over AdamW's parameters, then Muon's, and Muon's group is marked ``"muon": True`` so
the learning-rate schedule can give it its own peak.
"""

from __future__ import annotations

from typing import Any

import torch

from macgpt.config.schema import TrainConfig
from macgpt.worker.adamw import AdamW
from macgpt.worker.muon import Muon


def split_params(model: torch.nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """(hidden matrices, other matrices, vectors): Muon's share, then AdamW's decayed and undecayed ones."""
    hidden, matrices, vectors = [], [], []
    for name, p in model.named_parameters():
        if p.dim() < 2:
            vectors.append(p)
        elif name.startswith("blocks."):
            hidden.append(p)
        else:  # token embedding and output head
            matrices.append(p)
    return hidden, matrices, vectors


class RecipeOptimizer:
    def __init__(self, adamw: AdamW, muon: Muon) -> None:
        self.adamw, self.muon = adamw, muon
        muon.param_groups[0]["muon"] = True

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.adamw.param_groups + self.muon.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adamw.zero_grad(set_to_none)
        self.muon.zero_grad(set_to_none)

    def step(self) -> None:
        self.adamw.step()
        self.muon.step()

    def state_dict(self) -> dict[str, Any]:
        a, m = self.adamw.state_dict(), self.muon.state_dict()
        n = sum(len(g["params"]) for g in a["param_groups"])
        state = {**a["state"], **{n + int(i): s for i, s in m["state"].items()}}
        groups = a["param_groups"] + [{**g, "params": [n + i for i in g["params"]]} for g in m["param_groups"]]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        groups = sd["param_groups"]
        if not groups or not groups[-1].get("muon"):
            raise ValueError("optimizer state has no Muon group: it was saved by the classic recipe")
        n = sum(len(g["params"]) for g in groups[:-1])
        self.adamw.load_state_dict({"state": {i: s for i, s in sd["state"].items() if int(i) < n},
                                    "param_groups": groups[:-1]})
        muon_group = {**groups[-1], "params": [i - n for i in groups[-1]["params"]]}
        self.muon.load_state_dict({"state": {int(i) - n: s for i, s in sd["state"].items() if int(i) >= n},
                                   "param_groups": [muon_group]})


def make_optimizer(model: torch.nn.Module, recipe: str, cfg: TrainConfig) -> AdamW | RecipeOptimizer:
    """Classic: AdamW with weight decay on matrices only. Modern: Muon for the blocks' matrices, AdamW
    (decay on the embedding and head) for the rest."""
    if recipe == "classic":  # the parameter order of the checkpoints written before recipes existed
        groups = [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]
        return AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    hidden, matrices, vectors = split_params(model)
    adamw = AdamW([{"params": matrices, "weight_decay": cfg.weight_decay}, {"params": vectors, "weight_decay": 0.0}],
                  lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    ns_dtype = None if cfg.muon_dtype == "auto" else getattr(torch, cfg.muon_dtype)
    return RecipeOptimizer(adamw, Muon(hidden, lr=cfg.muon_lr, momentum=cfg.muon_momentum, ns_dtype=ns_dtype))
