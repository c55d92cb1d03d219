"""transformers' Transformer-XL (4.57.6, a deprecated model), made runnable as a reference.

Two things stand between its code and a forward pass, both fixed here for the tests only:

- ``TransfoXLModel.forward`` builds its relative positions with
  ``torch.arange(...).type_as(dtype=word_emb.dtype)``, which PyTorch refuses (``type_as`` takes a
  tensor, not a dtype), so every default forward raises TypeError. ``patched()`` recompiles that
  one method from its own source with that one call read as ``.to(dtype=...)`` — what it means.
- ``TransfoXLLMHeadModel`` no longer inherits ``generate``: transformers 4.50 stopped giving it
  to classes that only define ``prepare_inputs_for_generation``, except through
  ``add_generation_mixin_to_remote_model``, its own compatibility function, which
  ``model_class()`` applies.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap

from .reference import transformers


class _TypeAsDtype(ast.NodeTransformer):
    """``x.type_as(dtype=d)`` (no positional argument) -> ``x.to(dtype=d)``."""

    fixed = 0

    def visit_Call(self, node: ast.Call) -> ast.Call:
        self.generic_visit(node)
        if isinstance(node.func, ast.Attribute) and node.func.attr == "type_as" and not node.args:
            node.func.attr = "to"
            self.fixed += 1
        return node


@functools.cache
def patched():
    """The ``modeling_transfo_xl`` module, its ``TransfoXLModel.forward`` fixed (once per test run)."""
    transformers()
    from transformers.models.deprecated.transfo_xl import modeling_transfo_xl as m

    tree = ast.parse(textwrap.dedent(inspect.getsource(m.TransfoXLModel.forward)))
    tree.body[0].decorator_list = []  # they only write the docstring, already on the method
    fix = _TypeAsDtype()
    tree = ast.fix_missing_locations(fix.visit(tree))
    assert fix.fixed == 1, "transformers' TransfoXLModel.forward changed: look at the patch again"
    scope: dict = {}
    exec(compile(tree, m.__file__, "exec"), m.__dict__, scope)
    m.TransfoXLModel.forward = scope["forward"]
    return m


def model_class(name: str):
    """TransfoXLModel, TransfoXLLMHeadModel (with generate) or TransfoXLForSequenceClassification."""
    m = patched()
    cls = getattr(m, name)
    if name == "TransfoXLLMHeadModel":
        from transformers.models.auto.auto_factory import add_generation_mixin_to_remote_model

        cls = _with_generate(cls, add_generation_mixin_to_remote_model)
    return cls


@functools.cache
def _with_generate(cls, add):
    return add(cls)
