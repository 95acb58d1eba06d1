"""The layers of a model after a given layer, as a function of that layer's output.

Ablation-CAM scores one forward per (image, channel) with a channel of the target
layer's output zeroed; only the layers after the target layer depend on it. A
torch.fx split (:func:`trace_tail`) gives those layers as a module of their own, so
each ablated forward costs the model's tail instead of the whole model.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx, nn

from cambench.models.inference import has_forward_hooks


class _LeafTracer(fx.Tracer):
    """A tracer that keeps the target layer as one call (a leaf)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return m is self.layer or super().is_leaf_module(m, module_qualified_name)


@dataclass
class ModelTail:
    """The layers after ``layer`` as a function of its output (a torch.fx split).

    ``tail(A, *context)`` gives the logits. ``context`` holds the values computed
    before the target layer that the tail still needs (skip connections across the
    layer, e.g. a CA-Stream token); ``head(images)`` computes them (``None`` when the
    tail needs none, as for ResNets, MobileNets and VGGs with the last stage as
    target layer, so the tail costs only the classifier).
    """

    tail: fx.GraphModule
    head: fx.GraphModule | None


def _graph_module(root: nn.Module, graph: fx.Graph) -> fx.GraphModule:
    module = fx.GraphModule(root, graph)
    module.graph.eliminate_dead_code()
    module.recompile()
    return module


def trace_tail(model: nn.Module, layer: nn.Module) -> ModelTail | None:
    """Split ``model`` after ``layer``; ``None`` when tracing or splitting is not possible.

    Models with forward hooks are not traced: tracing would call the hooks with
    symbolic values, and hooks on containers would be missing from the split.
    """
    if has_forward_hooks(model):
        return None
    # Tracing runs the forward's Python code on symbolic values: undo any attribute it
    # sets on a module (e.g. a cached attention map), whether tracing works or not.
    saved = [(m, dict(m.__dict__)) for m in model.modules()]
    try:
        graph = _LeafTracer(layer).trace(model)
    except Exception:  # untraceable models (data-dependent control flow, ...)
        return None
    finally:
        for m, attributes in saved:
            if m.__dict__.keys() != attributes.keys() or any(
                m.__dict__[k] is not v for k, v in attributes.items()
            ):
                m.__dict__.clear()
                m.__dict__.update(attributes)
    modules = dict(model.named_modules())
    nodes = list(graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    calls = [n for n in nodes if n.op == "call_module" and modules.get(n.target) is layer]
    if len(placeholders) != 1 or len(calls) != 1:
        return None
    (target,) = calls
    depends_on_input: set[fx.Node] = set(placeholders)
    after: set[fx.Node] = {target}
    for n in nodes:
        inputs = n.all_input_nodes
        if any(i in depends_on_input for i in inputs):
            depends_on_input.add(n)
        if n is not target and any(i in after for i in inputs):
            after.add(n)
    (output,) = [n for n in nodes if n.op == "output"]
    result = output.args[0]
    if not isinstance(result, fx.Node) or result not in after:
        return None
    after.discard(output)
    # Values from before the layer that the tail uses (the layer's own input is not one).
    context = [
        n
        for n in nodes
        if n not in after
        and n in depends_on_input
        and any(u in after and u is not target for u in n.users)
    ]

    tail_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {target: tail_graph.placeholder("activation")}
    for i, n in enumerate(context):
        env[n] = tail_graph.placeholder(f"context_{i}")
    for n in nodes:
        if n in env or n.op in ("placeholder", "output"):
            continue
        if n in after or n not in depends_on_input:
            env[n] = tail_graph.node_copy(n, lambda a: env[a])
    tail_graph.output(env[result])
    tail = _graph_module(model, tail_graph)

    head = None
    if context:
        head_graph = fx.Graph()
        head_env: dict[fx.Node, fx.Node] = {}
        for n in nodes:
            if n in after or n.op == "output":
                continue
            head_env[n] = head_graph.node_copy(n, lambda a: head_env[a])
        head_graph.output(tuple(head_env[n] for n in context))
        head = _graph_module(model, head_graph)
    return ModelTail(tail, head)
