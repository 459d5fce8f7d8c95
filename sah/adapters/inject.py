"""Put adapters into a model, freeze the rest, and take them out again.

Targets resolve as in docs/CONVENTIONS.md: a group name of ``model.module_groups()``, ``"all"``
(implicit), or a regular expression searched in module names; a module in the scope of a
target brings everything under it. Norm layers outside what is trained run with frozen
running statistics (as in eval mode) so that "frozen" means nothing about them changes.
"""

from __future__ import annotations

import difflib
import itertools
import re
import warnings
from dataclasses import dataclass, field

from torch import nn

from .config import AdapterConfig, AdapterError, AdapterWarning
from .geometry import SUPPORTED_TYPES
from .layers import COMPUTE_PATHS, AdapterLayer
from .normfold import can_fold

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, SyncBatchNorm, InstanceNorm*
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
STATE_ATTR = "_sah_adapter_state"


@dataclass
class AdapterState:
    """What ``inject`` did to a model, so that it can be saved and undone."""

    config: AdapterConfig
    adapted: list[str]  # AdapterLayer names, or the modules made trainable by "full"
    trainable_modules: list[str]  # norm layers (train_norm) or "full" modules, original names
    requires_grad: dict[str, bool] = field(default_factory=dict)  # before inject
    frozen_norms: list[str] = field(default_factory=list)  # norms that keep their statistics


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, NORM_TYPES)


def _freeze_statistics(module: nn.Module, args) -> None:
    """Forward pre-hook on a frozen norm layer: use, never update, the running statistics."""
    module.training = False


def _in_scope(name: str, scope: list[str]) -> bool:
    return any(s == "" or name == s or name.startswith(s + ".") for s in scope)


def _groups(model: nn.Module) -> dict[str, list[str]]:
    fn = getattr(model, "module_groups", None)
    if not callable(fn):
        return {}
    groups = dict(fn())
    names = {name for name, _ in model.named_modules()}
    for group, members in groups.items():
        missing = [m for m in members if m not in names]
        if missing:
            raise AdapterError(
                f"{type(model).__name__}.module_groups()['{group}'] names modules the model "
                f"does not have: {', '.join(missing)}"
            )
    return groups


def resolve_scope(model: nn.Module, target: str) -> list[str]:
    """Module names (subtrees) that ``target`` selects; ``[""]`` is the whole model."""
    groups = _groups(model)
    if target in groups:
        return list(groups[target])
    if target == "all":
        return [""]
    try:
        pattern = re.compile(target)
    except re.error as exc:
        raise AdapterError(
            f"adapter.target: {target!r} is neither {_group_names(model, groups, target)} nor a "
            f"valid regular expression ({exc})"
        ) from exc
    return [name for name, _ in model.named_modules() if name and pattern.search(name)]


def _group_names(model: nn.Module, groups: dict[str, list[str]], typed: str) -> str:
    """'a module group of UNet (all, encoder, decoder; did you mean 'decoder'?)'."""
    known = list(dict.fromkeys(["all", *groups]))
    close = difflib.get_close_matches(typed, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"a module group of {type(model).__name__} ({', '.join(known)}{hint})"


def _adapter_layers(model: nn.Module) -> list[tuple[str, AdapterLayer]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, AdapterLayer)]


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _no_hits(model: nn.Module, method: str, target: str) -> str:
    """Why ``target`` selects nothing: a mistyped group name (the usual case) names the model's
    groups; a pattern that matches only unadaptable layers names what can be adapted."""
    groups = _groups(model)
    what = "module with parameters" if method == "full" else "adaptable layer"
    if groups and not resolve_scope(model, target):
        return (
            f"adapter.target: {target!r} is neither {_group_names(model, groups, target)} nor a "
            f"pattern matching any of its module names"
        )
    adaptable = ", ".join(t.__name__ for t in SUPPORTED_TYPES)
    return f"adapter.target: {target!r} matches no {what} (adaptable: {adaptable})"


_WARNED: set[str] = set()


def _frozen_message(method: str, left_out: list[tuple[str, nn.Module]]) -> str:
    """One short line: how many targeted modules stay frozen, their classes, one example."""
    classes = sorted({type(m).__name__ for _, m in left_out})
    verb = "is not an adaptable layer" if len(classes) == 1 else "are not adaptable layers"
    return (
        f"{method} leaves {len(left_out)} targeted module(s) frozen: {', '.join(classes)} "
        f"{verb} (e.g. {left_out[0][0]})"
    )


def _warn_once(message: str) -> None:
    """Warn once per process: every trial of a sweep builds the same model, and Lightning's
    warning filters reset Python's own once-per-location registry."""
    if message in _WARNED:
        return
    _WARNED.add(message)
    warnings.warn(message, AdapterWarning, stacklevel=3)


def inject(model: nn.Module, config: AdapterConfig) -> list[str]:
    """Adapt the targeted layers of ``model`` in place and freeze everything else.

    Returns the adapted module names (for ``"full"``, the modules made trainable; for
    ``"none"``, ``[]``). Raises ``AdapterError`` for a target that matches no layer, or a
    targeted layer the method cannot adapt, before changing anything.
    """
    if not isinstance(config, AdapterConfig):
        raise AdapterError(f"inject expects an AdapterConfig, got {type(config).__name__}")
    if getattr(model, STATE_ATTR, None) is not None or _adapter_layers(model):
        raise AdapterError("the model already has adapters; call merge_and_unload first")
    modules = dict(model.named_modules())
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}

    scope: list[str] = []
    if config.method != "none":
        for target in config.target_list:
            target_scope = resolve_scope(model, target)
            in_scope = [n for n, m in modules.items() if _in_scope(n, target_scope)]
            if config.method == "full":
                hits = [n for n in in_scope if _owns_parameters(modules[n])]
            else:
                hits = [n for n in in_scope if isinstance(modules[n], SUPPORTED_TYPES)]
            if not hits:
                raise AdapterError(_no_hits(model, config.method, target))
            scope += target_scope

    in_scope = [n for n in modules if config.method != "none" and _in_scope(n, scope)]
    if config.method == "full":
        adapted = [n for n in in_scope if _owns_parameters(modules[n])]
        trainable = list(adapted)
    elif config.method == "none":
        adapted, trainable = [], []
    else:
        adapted = [n for n in in_scope if isinstance(modules[n], SUPPORTED_TYPES)]
        trainable = [n for n in in_scope if config.train_norm and _is_norm(modules[n])]
        # Build every wrapper first so that a refused layer leaves the model untouched.
        wrappers = {n: AdapterLayer(modules[n], n, config) for n in adapted}
        left_out = [
            n
            for n in in_scope
            if n not in wrappers
            and not _is_norm(modules[n])
            and _owns_parameters(modules[n])
            and not any(n.startswith(a + ".") for a in adapted)
        ]
        if left_out:
            _warn_once(_frozen_message(config.method, [(n, modules[n]) for n in left_out]))

    for p in model.parameters():
        p.requires_grad_(False)
    for name in trainable:
        for p in modules[name].parameters(recurse=config.method != "full"):
            p.requires_grad_(True)
    if config.method not in ("full", "none"):
        for name, wrapper in wrappers.items():
            _set_module(model, name, wrapper)
            for p in wrapper.adapter_parameters():
                p.requires_grad_(True)
    trainable_norms = set(trainable) if config.method != "full" else set(in_scope)
    frozen_norms = [n for n, m in modules.items() if _is_norm(m) and n not in trainable_norms]
    state = AdapterState(config, adapted, trainable, requires_grad, frozen_norms)
    setattr(model, STATE_ATTR, state)
    _hold_norms(model, state)
    return list(adapted)


def _hold_norms(model: nn.Module, state: AdapterState) -> None:
    """Freeze the statistics of the frozen norms and fold those after adapted convs."""
    modules = dict(model.named_modules())
    for name in state.frozen_norms:
        hooks = modules[name]._forward_pre_hooks
        if _freeze_statistics not in hooks.values():
            modules[name].register_forward_pre_hook(_freeze_statistics)
    if state.config.fold_norm:
        _fold_norms(model)


def reattach_norms(model: nn.Module) -> None:
    """Take hold of the norm layers again after something replaced them.

    Lightning's ``sync_batchnorm`` swaps every BatchNorm for a new ``SyncBatchNorm`` (same
    parameters and buffers, none of their hooks) once the model is built: a frozen norm would
    start updating its statistics, and an adapted conv would go on applying the norm it folded
    while the new module normalises again. Call this after such a swap (``on_fit_start``).
    """
    state = getattr(model, STATE_ATTR, None)
    if state is None:
        return
    following = dict(_layer_and_next(model))
    for layer in following:
        if layer.folded_norm is not None and following[layer] is not layer.folded_norm:
            layer.unfold_norm()  # its norm is no longer in the model
    _hold_norms(model, state)


def _plain_sequential(module: nn.Module) -> bool:
    """An ``nn.Sequential`` (or subclass) that feeds each child's output to the next."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _layer_and_next(model: nn.Module) -> list[tuple[AdapterLayer, nn.Module]]:
    """Each adapted conv and the module its output goes to next, inside plain Sequentials.

    The next module is the following sibling, or that sibling's first leaf when it is a plain
    Sequential itself (MONAI's ``Convolution`` then ``ADN``: conv, then norm first).
    """
    pairs = []
    for module in model.modules():
        if not _plain_sequential(module):
            continue
        for layer, after in itertools.pairwise(module.children()):
            if not isinstance(layer, AdapterLayer) or layer.geometry.kind == "linear":
                continue
            while _plain_sequential(after):
                first = next(after.children(), None)
                if first is None:
                    break
                after = first
            pairs.append((layer, after))
    return pairs


def _fold_norms(model: nn.Module) -> None:
    """Let each adapted conv apply the frozen BatchNorm that comes right after it."""
    for layer, norm in _layer_and_next(model):
        if layer.folded_norm is None and can_fold(norm, layer.geometry.dims, layer.geometry.c_out):
            layer.fold_norm(norm)


def adapter_state(model: nn.Module) -> AdapterState:
    state = getattr(model, STATE_ATTR, None)
    if state is None:
        raise AdapterError("the model has no adapters; call inject(model, config) first")
    return state


def adapter_layers(model: nn.Module) -> dict[str, AdapterLayer]:
    """The model's adapter layers by name."""
    return dict(_adapter_layers(model))


def set_compute_path(model: nn.Module, path: str) -> None:
    """Force ``"weight"`` or ``"lowrank"`` (or back to ``"auto"``) in every adapter layer."""
    if path not in COMPUTE_PATHS:
        raise AdapterError(f"compute path must be one of {COMPUTE_PATHS}, got {path!r}")
    for _, layer in _adapter_layers(model):
        layer.compute_path = path


def merge(model: nn.Module) -> None:
    """Fold every adapter into its base weight: inference costs what the base model costs."""
    for _, layer in _adapter_layers(model):
        layer.merge()


def unmerge(model: nn.Module) -> None:
    """Restore the base weights exactly, so training can go on."""
    for _, layer in _adapter_layers(model):
        layer.unmerge()


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge, then replace every adapter layer by its base layer (the original class).

    Removes the frozen-statistics hooks and restores each parameter's ``requires_grad`` as it
    was before ``inject``: the result is a plain model for ``torch.save``, TorchScript, ONNX.
    """
    state = getattr(model, STATE_ATTR, None)
    for name, layer in _adapter_layers(model):
        layer.merge()
        layer.unfold_norm()
        layer._merged_backup = None
        _set_module(model, name, layer.base_layer)
    for module in model.modules():
        hooks = module._forward_pre_hooks
        for key in [k for k, fn in hooks.items() if fn is _freeze_statistics]:
            del hooks[key]
    if state is not None:
        for name, p in model.named_parameters():
            p.requires_grad_(state.requires_grad.get(name, True))
        delattr(model, STATE_ATTR)
    return model


def trainable_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable parameter count per adapted module (and per trainable norm), plus ``"total"``."""
    counts: dict[str, int] = {}
    layers = dict(_adapter_layers(model))
    for name, module in model.named_modules():
        if any(name.startswith(a + ".") for a in layers):
            continue
        recurse = name in layers
        n = sum(p.numel() for p in module.parameters(recurse=recurse) if p.requires_grad)
        if n:
            counts[name] = n
    counts["total"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts
