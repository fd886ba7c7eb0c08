"""docs/api.md stays true: it names every route the app serves and every error code."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from makima import errors
from makima.api.app import create_app
from tests.routes import api_routes

pytestmark = pytest.mark.unit
API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


class _NoDatabase:
    def connection(self) -> None:
        raise AssertionError("not used")

    def close(self) -> None:
        return None


def test_every_route_is_documented() -> None:
    text = API_DOC.read_text()
    app = create_app(_NoDatabase())
    for method, path in api_routes(app.routes):
        assert f"`{method} {path}`" in text, f"docs/api.md does not document {method} {path}"


def test_every_error_code_is_documented() -> None:
    text = API_DOC.read_text()
    for _, cls in inspect.getmembers(errors, inspect.isclass):
        if issubclass(cls, errors.MakimaError) and cls is not errors.MakimaError:
            assert f"`{cls.code}`" in text, f"docs/api.md does not document {cls.code}"
