"""The actions ``runcache run`` runs itself: checkout, cache (and its restore/save halves) and setup-python."""

from __future__ import annotations

from runcache.runner.actions.base import ActionContext, ActionFailed, BuiltinAction, InputSpec
from runcache.runner.actions.registry import SUPPORTED, resolve_action, unsupported_message

__all__ = [
    "SUPPORTED",
    "ActionContext",
    "ActionFailed",
    "BuiltinAction",
    "InputSpec",
    "resolve_action",
    "unsupported_message",
]
