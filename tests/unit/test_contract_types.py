"""Task 1.1: deliverable validation against the built-in contract types."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from makima.domain.contract_types import ContractTypeDefinition, builtin_types
from makima.errors import InvalidDeliverable, ValidationFailed

pytestmark = pytest.mark.unit

TYPES = {t.name: t for t in builtin_types()}


def test_builtin_types_ship_with_their_phases() -> None:
    assert TYPES["simple"].phase_ids == ["plan", "execute"]
    assert TYPES["specification"].phase_ids == ["research", "specify", "plan", "execute", "review"]
    for t in TYPES.values():
        assert all(p.deliverables for p in t.phases), f"{t.name}: every phase names its deliverables"


@pytest.mark.parametrize(
    ("type_name", "phase", "deliverable"),
    [(t.name, p.id, d.id) for t in builtin_types() for p in t.phases for d in p.deliverables],
)
def test_every_valid_deliverable_of_every_phase_is_accepted(type_name: str, phase: str, deliverable: str) -> None:
    assert TYPES[type_name].validate_deliverable(phase, deliverable).id == deliverable


@pytest.mark.parametrize(
    ("type_name", "phase", "deliverable"),
    [
        ("simple", "plan", "implementation"),  # exists, but in another phase
        ("simple", "plan", "no-such-thing"),
        ("specification", "review", "plan-document"),
        ("specification", "research", ""),
    ],
)
def test_invalid_deliverables_are_rejected_listing_the_valid_ids(type_name: str, phase: str, deliverable: str) -> None:
    t = TYPES[type_name]
    with pytest.raises(InvalidDeliverable) as err:
        t.validate_deliverable(phase, deliverable)
    assert err.value.status == 400
    assert err.value.details["valid_deliverables"] == t.phase(phase).deliverable_ids


def test_unknown_phase_is_a_validation_failure_naming_the_phases() -> None:
    with pytest.raises(ValidationFailed) as err:
        TYPES["simple"].validate_deliverable("review", "pull-request")
    assert err.value.details["valid_phases"] == ["plan", "execute"]


def test_next_phase_and_terminal_phase() -> None:
    spec = TYPES["specification"]
    assert spec.next_phase("research") == "specify"
    assert spec.next_phase("review") is None
    assert spec.terminal_phase == "review"


def test_a_type_with_duplicate_ids_is_refused() -> None:
    with pytest.raises(ValidationError):
        ContractTypeDefinition.model_validate(
            {"name": "dup", "phases": [{"id": "a", "name": "A"}, {"id": "a", "name": "A again"}]}
        )
    with pytest.raises(ValidationError):
        ContractTypeDefinition.model_validate(
            {
                "name": "dup",
                "phases": [
                    {
                        "id": "a",
                        "name": "A",
                        "deliverables": [{"id": "x", "name": "X"}, {"id": "x", "name": "Y"}],
                    }
                ],
            }
        )
