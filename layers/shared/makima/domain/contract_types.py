"""Contract types: the ordered phases of a kind of contract and the deliverables of each phase.

Types are data. The built-in ones are versioned JSON files in ``makima/contract_types/``; they are
synced into the ``contract_types`` table at migrate time, and the service reads them from there, so a
team can add its own type without a code change. Validation here is pure (Task 1.1).
"""

from __future__ import annotations

import json
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field, model_validator

from makima.domain.bounds import INT4_MAX
from makima.domain.gates import PhaseGate, validator_names
from makima.domain.strict import Int
from makima.errors import InvalidDeliverable, ValidationFailed

_SLUG = r"^[a-z][a-z0-9_-]{0,63}$"


class DeliverableDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_SLUG)
    name: str = Field(min_length=1, max_length=200)


class PhaseDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_SLUG)
    name: str = Field(min_length=1, max_length=200)
    deliverables: tuple[DeliverableDefinition, ...] = ()
    # No gate: the phase is advanced by hand only.
    gate: PhaseGate | None = None

    @model_validator(mode="after")
    def _gate_names_known_things(self) -> PhaseDefinition:
        if self.gate is None:
            return self
        unknown = [d for d in self.gate.required_deliverables or () if d not in self.deliverable_ids]
        if unknown:
            raise ValueError(
                f"phase {self.id}: gate requires unknown deliverables {unknown}; the phase has {self.deliverable_ids}"
            )
        if self.gate.validator is not None and self.gate.validator not in validator_names():
            raise ValueError(
                f"phase {self.id}: unknown gate validator {self.gate.validator!r}; registered: {validator_names()}"
            )
        return self

    @property
    def deliverable_ids(self) -> list[str]:
        return [d.id for d in self.deliverables]


class ContractTypeDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_SLUG)
    description: str = ""
    version: Int = Field(default=1, ge=1, le=INT4_MAX)
    phases: tuple[PhaseDefinition, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> ContractTypeDefinition:
        phase_ids = [p.id for p in self.phases]
        if len(set(phase_ids)) != len(phase_ids):
            raise ValueError(f"contract type {self.name}: phase ids must be unique: {phase_ids}")
        for phase in self.phases:
            ids = phase.deliverable_ids
            if len(set(ids)) != len(ids):
                raise ValueError(f"phase {phase.id}: deliverable ids must be unique: {ids}")
        return self

    @property
    def phase_ids(self) -> list[str]:
        return [p.id for p in self.phases]

    @property
    def first_phase(self) -> str:
        return self.phases[0].id

    @property
    def terminal_phase(self) -> str:
        return self.phases[-1].id

    def phase(self, phase_id: str) -> PhaseDefinition:
        """The phase named ``phase_id``; ``ValidationFailed`` listing the type's phases otherwise."""
        for p in self.phases:
            if p.id == phase_id:
                return p
        raise ValidationFailed(
            f"phase {phase_id!r} is not a phase of contract type {self.name!r}",
            {"phase": phase_id, "contract_type": self.name, "valid_phases": self.phase_ids},
        )

    def next_phase(self, phase_id: str) -> str | None:
        ids = self.phase_ids
        i = ids.index(self.phase(phase_id).id)
        return ids[i + 1] if i + 1 < len(ids) else None

    def validate_deliverable(self, phase_id: str, deliverable_id: str) -> DeliverableDefinition:
        """Task 1.1: the deliverable must belong to ``phase_id`` of this type.

        Raises ``InvalidDeliverable`` with the valid ids, so the caller can correct itself.
        """
        phase = self.phase(phase_id)
        for d in phase.deliverables:
            if d.id == deliverable_id:
                return d
        raise InvalidDeliverable(
            f"deliverable {deliverable_id!r} is not valid for phase {phase_id!r} of contract type {self.name!r}",
            {
                "deliverable_id": deliverable_id,
                "phase": phase_id,
                "contract_type": self.name,
                "valid_deliverables": phase.deliverable_ids,
            },
        )


def builtin_types() -> list[ContractTypeDefinition]:
    """The types shipped with the package, read from its JSON files."""
    folder = resources.files("makima") / "contract_types"
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            found.append(ContractTypeDefinition.model_validate(json.loads(entry.read_text("utf-8"))))
    return found
