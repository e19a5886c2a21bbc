"""The best state of ``PlateauConfig(restore_best_on_cut=True)``: kept on CPU at each new best, loaded at a cut.

Torch-only. The scheduler calls :meth:`BestState.capture` when a value improves ``best`` and :meth:`BestState.restore`
at a cut, so the state held is always that of the scheduler's ``best_evaluation``; the PlateauCallback builds it for
the fit's module and optimizers and keeps it in the checkpoint.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch
from torch.optim import Optimizer


class BestState:
    """One CPU copy of a module's ``state_dict`` and of its optimizers' per-parameter state.

    The copy covers the parameters and the buffers (BatchNorm's running statistics), and per optimizer its
    ``state`` (momentum buffers, Adam's moments and step counts). The param groups' settings (the LR and every other
    hyperparameter) are not copied: a restore leaves them as they are, so the LR stays the one the cut set.

    Args:
        module: the module whose weights are kept (the LightningModule; under DDP, the replica of this rank).
        optimizers: every optimizer training the module: all of them are rewound with the weights.
    """

    def __init__(self, module: torch.nn.Module, optimizers: Sequence[Optimizer]) -> None:
        self.module = module
        self.optimizers = list(optimizers)
        #: the evaluation (1-based) and epoch whose state is held, ``None`` while none is
        self.evaluation: Optional[int] = None
        self.epoch: Optional[int] = None
        self._module_state: dict[str, Any] = {}
        self._optimizer_states: list[dict[Any, Any]] = []
        # params per param group of each optimizer when the state was taken: the optimizer state is matched by
        # position, so a changed layout (BaseFinetuning adds groups) cannot take it back
        self._layouts: list[list[int]] = []

    @property
    def held(self) -> bool:
        """Whether a state is held."""
        return self.evaluation is not None

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data held (0 while nothing is)."""
        return _tensor_bytes(self._module_state) + _tensor_bytes(self._optimizer_states)

    def capture(self, evaluation: int, epoch: Optional[int]) -> None:
        """Copy the module's ``state_dict`` and the optimizers' ``state`` to CPU, replacing what was held."""
        # `to(copy=True)`: on CPU `to` would return the live tensor itself, which training goes on changing.
        self._module_state = _copied(self.module.state_dict())
        self._optimizer_states = [_copied(optimizer.state_dict()["state"]) for optimizer in self.optimizers]
        self._layouts = [_layout(optimizer) for optimizer in self.optimizers]
        self.evaluation, self.epoch = evaluation, epoch

    def restore(self) -> tuple[Optional[int], Optional[int]]:
        """Load the state held into the module and the optimizers; return its (evaluation, epoch).

        ``(None, None)`` when nothing is held. The weights are copied into the module's own tensors (DDP and the
        optimizers keep pointing at them); the optimizers keep their param groups as they are (LRs included) and
        take the held per-parameter state. Pending gradients are dropped: they belong to the weights left behind.

        Raises:
            RuntimeError: if an optimizer's param groups changed since the state was taken (a group was added,
                as ``BaseFinetuning`` does): its state could not be matched to the parameters.
        """
        if self.evaluation is None:
            return None, None
        for index, (optimizer, layout) in enumerate(zip(self.optimizers, self._layouts, strict=True)):
            if _layout(optimizer) != layout:
                raise RuntimeError(
                    f"PlateauConfig(restore_best_on_cut=True) cannot restore the state of evaluation {self.evaluation}:"
                    f" optimizer {index} ({type(optimizer).__name__}) had param groups of {layout} parameters then"
                    f" and has {_layout(optimizer)} now (a callback such as BaseFinetuning changed them), so its"
                    " state cannot be matched to the parameters. Turn restore_best_on_cut off for a run whose param"
                    " groups change."
                )
        self.module.load_state_dict(self._module_state)
        self.module.zero_grad(set_to_none=True)
        for optimizer, state in zip(self.optimizers, self._optimizer_states, strict=True):
            groups = optimizer.state_dict()["param_groups"]
            # A fresh copy each time: torch loads CPU tensors (and every `step`) as they are, so training would
            # otherwise change the held state through the optimizer.
            optimizer.load_state_dict({"state": _copied(state), "param_groups": groups})
        return self.evaluation, self.epoch

    def state_dict(self) -> dict[str, Any]:
        """The state held, as plain data and CPU tensors (loadable with ``weights_only=True``); ``{}`` if none."""
        if self.evaluation is None:
            return {}
        return {
            "evaluation": self.evaluation,
            "epoch": self.epoch,
            "module": self._module_state,
            "optimizers": self._optimizer_states,
            "layouts": self._layouts,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Hold the state of :meth:`state_dict` (an empty one holds nothing)."""
        if not state:
            self.evaluation = self.epoch = None
            self._module_state, self._optimizer_states, self._layouts = {}, [], []
            return
        optimizers = list(state["optimizers"])
        if len(optimizers) != len(self.optimizers):
            raise RuntimeError(
                f"The checkpoint's best state for restore_best_on_cut holds {len(optimizers)} optimizer state(s),"
                f" this fit has {len(self.optimizers)} optimizer(s): it comes from another model. Resume with the"
                " model and optimizers that wrote it."
            )
        # A checkpoint's tensors are this state's own (Lightning loads them to CPU): moved, never copied twice.
        self._module_state = _copied(state["module"], copy_tensors=False)
        self._optimizer_states = [_copied(s, copy_tensors=False) for s in optimizers]
        self._layouts = [list(layout) for layout in state["layouts"]]
        self.evaluation, self.epoch = int(state["evaluation"]), state.get("epoch")


def _layout(optimizer: Optimizer) -> list[int]:
    return [len(group["params"]) for group in optimizer.param_groups]


def _copied(value: Any, *, copy_tensors: bool = True) -> Any:
    """``value`` with every tensor in it on CPU and detached; dicts, lists and tuples rebuilt, the rest deep-copied.

    Tensors are copies unless ``copy_tensors`` is false (then only those elsewhere are). A ``state_dict``'s
    ``_metadata`` (the modules' versions, which ``load_state_dict`` reads) is kept.
    """
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=copy_tensors)
    if isinstance(value, dict):
        items = {key: _copied(item, copy_tensors=copy_tensors) for key, item in value.items()}
        metadata = getattr(value, "_metadata", None)
        if metadata is None:
            return items
        kept = OrderedDict(items)
        kept._metadata = copy.deepcopy(metadata)  # type: ignore[attr-defined]
        return kept
    if isinstance(value, (list, tuple)):
        return type(value)(_copied(item, copy_tensors=copy_tensors) for item in value)
    return copy.deepcopy(value)


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(item) for item in value)
    return 0
