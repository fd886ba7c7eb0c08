"""Feature flags keep their evaluation per flag document (makima/flags.py: ``PowertoolsFlags``): an
unchanged document is validated and evaluated once per flag, not on every call (issue 15); a changed
document is seen on the very next call; a store that fails gives the default. Flags switched at runtime
end to end: tests/integration/test_flags_runtime.py."""

from __future__ import annotations

from typing import Any

import pytest
from aws_lambda_powertools.utilities.feature_flags.base import StoreProvider

from makima.config import FeatureFlagsConfig
from makima.flags import Flag, PowertoolsFlags, flag_document


class Store(StoreProvider):
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.fail = False

    @property
    def get_raw_configuration(self) -> dict[str, Any]:
        return self.get_configuration()

    def get_configuration(self) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("store down")
        return dict(self.document)


def test_an_unchanged_document_is_evaluated_once_per_flag_and_a_change_is_seen_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = FeatureFlagsConfig()
    store = Store(flag_document(defaults))
    flags = PowertoolsFlags(store, defaults)
    evaluated: list[str] = []
    real = flags._flags.evaluate

    def counted(*, name: str, default: Any, **kwargs: Any) -> Any:
        evaluated.append(name)
        return real(name=name, default=default, **kwargs)

    monkeypatch.setattr(flags._flags, "evaluate", counted)
    for _ in range(5):
        assert flags.enabled(Flag.AUTO_COMPLETE) is defaults.auto_complete
        assert flags.enabled(Flag.ENHANCED_CONTRACT_STATUS) is defaults.enhanced_contract_status
    assert sorted(evaluated) == sorted([Flag.AUTO_COMPLETE.value, Flag.ENHANCED_CONTRACT_STATUS.value])
    # switched in the store: the next call sees it
    store.document = {**store.document, Flag.AUTO_COMPLETE.value: {"default": not defaults.auto_complete}}
    assert flags.enabled(Flag.AUTO_COMPLETE) is (not defaults.auto_complete)
    assert flags.enabled(Flag.ENHANCED_CONTRACT_STATUS) is defaults.enhanced_contract_status
    # the store fails: the configured default, never an error
    store.fail = True
    assert flags.enabled(Flag.AUTO_COMPLETE) is defaults.auto_complete
