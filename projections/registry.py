"""Finding projections by name: the built-ins, or an analyst's ``module:Class``."""

from __future__ import annotations

import importlib

from caseledger.ledger.errors import ConfigurationError
from caseledger.projections.base import Projection

BUILT_INS = {
    "case_state": "caseledger.projections.case_state:CaseState",
    "timeline": "caseledger.projections.timeline:CustomerTimeline",
    "deadlines": "caseledger.projections.deadlines:Deadlines",
    "channel_metrics": "caseledger.projections.channel_metrics:ChannelMetrics",
}


def load_projection(spec: str) -> Projection:
    """A built-in by name (``case_state``) or an analyst's projection as ``module:Class``."""
    target = BUILT_INS.get(spec, spec)
    module_name, sep, class_name = target.partition(":")
    if not sep or not module_name or not class_name:
        raise ConfigurationError(
            f"unknown projection {spec!r}: use a built-in ({', '.join(BUILT_INS)}) or module:Class, "
            "e.g. my_projections:FirstContactResolution"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(
            f"cannot import {module_name!r} for projection {spec!r}: {error}; run from the directory that holds "
            "the module or add it to PYTHONPATH"
        ) from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Projection)):
        raise ConfigurationError(f"{target} is not a Projection subclass")
    cls.check()
    return cls()


def load_projections(specs: list[str] | None) -> list[Projection]:
    """The named projections, or every built-in when none is named."""
    return [load_projection(s) for s in (specs or list(BUILT_INS))]
