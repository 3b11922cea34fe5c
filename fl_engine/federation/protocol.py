"""The federation's message protocol: every kind of message a manager may send a node, written once.

A kind (`MessageKind`) registers its node handler (the node's answer: its table, the run config,
the request, its name -> NodeReply), its reply check (what a reply of that kind may carry: the
check every reply passes on the node before it leaves, and in the in-process executor) and,
where the manager folds its replies in through the protocol, its aggregation (replies by node
name, in name order, and the manager's state of the run -> the result). Every reply's metrics
must be scalar numbers, whatever its kind.

`fl_engine.federation.core.handle_request` and `check_reply_privacy` are lookups here; a kind
nobody registered is refused with an error naming the known ones. The kinds come from
`PROVIDERS`: survival studies (`fl_engine.federation.survival_kinds`), the exact Cox model
(`fl_engine.federation.cox_kinds`), synthetic cohorts (`fl_engine.federation.synthesis.kinds`) and
analysis studies (`fl_engine.federation.analysis.kinds`),
each a module with a ``MESSAGE_KINDS`` tuple.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # annotations only: core imports this module
    import pandas as pd

    from fl_engine.federation.config import RunConfig
    from fl_engine.federation.core import NodeReply, NodeRequest

NodeHandler = Callable[["pd.DataFrame", "RunConfig", "NodeRequest", str], "NodeReply"]
ReplyCheck = Callable[[str, "NodeReply", "list[tuple] | None", "NodeRequest | None"], None]
Aggregation = Callable[[dict, object], object]

PROVIDERS = ("fl_engine.federation.survival_kinds", "fl_engine.federation.cox_kinds",
             "fl_engine.federation.synthesis.kinds", "fl_engine.federation.analysis.kinds")


@dataclass(frozen=True)
class MessageKind:
    """One kind of message: its name (as Flower's message type carries it, fl_engine.federation
    .flower_io), what a node answers (`handle`), what that answer may carry (`check_reply`:
    (kind, reply, shapes of the arrays the manager sent or None, the request or None), raising
    ValueError) and, when the manager folds its replies in through the protocol, `aggregate`."""

    name: str
    handle: NodeHandler
    check_reply: ReplyCheck
    aggregate: Aggregation | None = None
    doc: str = ""


class Protocol:
    """Message kinds by name. Providers (module names) are imported on the first lookup of a
    kind not registered yet, one after the other until it is found (a node answering survival
    requests never loads the generators)."""

    def __init__(self, providers: tuple[str, ...] = ()):
        self._kinds: dict[str, MessageKind] = {}
        self._pending = list(providers)

    def register(self, kind: MessageKind) -> None:
        """Add a kind; ValueError for a second kind of the same name or one without a handler
        or reply check."""
        if kind.name in self._kinds:
            raise ValueError(f"message kind {kind.name!r} is registered twice")
        if not callable(kind.handle) or not callable(kind.check_reply):
            raise ValueError(f"message kind {kind.name!r} needs a node handler and a reply check")
        self._kinds[kind.name] = kind

    def kind(self, name: str) -> MessageKind:
        """The kind called `name`; ValueError naming the known kinds when there is none."""
        while name not in self._kinds and self._pending:
            self._load_next()
        if name not in self._kinds:
            raise ValueError(f"unknown message kind {name!r}; known: {', '.join(self.names())}")
        return self._kinds[name]

    def names(self) -> tuple[str, ...]:
        """Every known kind, in registration order (loads every provider)."""
        while self._pending:
            self._load_next()
        return tuple(self._kinds)

    def handle(self, df: pd.DataFrame, cfg: RunConfig, req: NodeRequest, name: str) -> NodeReply:
        """The node's answer to `req` on its table `df`."""
        return self.kind(req.kind).handle(df, cfg, req, name)

    def check_reply(self, kind: str, reply: NodeReply, weight_shapes: list[tuple] | None,
                    request: NodeRequest | None = None) -> None:
        """Raise ValueError unless `reply` holds only what a reply of `kind` may carry."""
        check = self.kind(kind).check_reply
        for k, v in reply.metrics.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ValueError(f"{kind} reply metric {k!r} is not a scalar number: {type(v).__name__}")
        check(kind, reply, weight_shapes, request)

    def aggregate(self, kind: str, replies: dict[str, NodeReply], state: object) -> object:
        """The manager's aggregation of the replies of `kind` (by node name, in name order)."""
        k = self.kind(kind)
        if k.aggregate is None:
            raise ValueError(f"message kind {kind!r} has no manager-side aggregation in the protocol")
        return k.aggregate(replies, state)

    def _load_next(self) -> None:
        # By name, when first needed: the providers import core, which imports this module, so
        # importing them at the top of this module would be a cycle.
        kinds = importlib.import_module(self._pending[0]).MESSAGE_KINDS
        self._pending.pop(0)
        for kind in kinds:
            self.register(kind)


PROTOCOL = Protocol(PROVIDERS)
