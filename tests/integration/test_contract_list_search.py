"""Issue 16: the contract list searched by name, filtered by type and sorted by activity on the server,
paged by cursors that belong to their sort."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from makima.domain.principals import Role
from tests.conftest import Caller

pytestmark = pytest.mark.integration
API = "/api/v1"
NewContract = Callable[..., dict[str, Any]]


def _lister(client: TestClient, me: Caller) -> Callable[..., list[str]]:
    def listed(**params: Any) -> list[str]:
        r = client.get(f"{API}/contracts", params=params, headers=me.headers)
        assert r.status_code == 200, r.text
        return [x["name"] for x in r.json()["contracts"]]

    return listed


def _walk(client: TestClient, me: Caller, **params: Any) -> list[str]:
    """Every page of two, stitched by cursor."""
    seen: list[str] = []
    cursor = None
    while True:
        query = {"limit": 2, **params} | ({"cursor": cursor} if cursor else {})
        r = client.get(f"{API}/contracts", params=query, headers=me.headers)
        assert r.status_code == 200, r.text
        seen += [x["name"] for x in r.json()["contracts"]]
        cursor = r.json()["next_cursor"]
        if not cursor:
            return seen


def test_name_search_is_a_case_insensitive_substring_taken_literally(
    client: TestClient, make_caller: Callable[..., Caller], new_contract: NewContract
) -> None:
    # Given contracts whose names hold LIKE's wildcards and its escape character
    me, other = make_caller(), make_caller()
    for name in ("Auth service", "billing AUTH", "100% done", "1000 done", "snake_case", "snakeXcase", "a\\b"):
        new_contract(me, name=name)
    new_contract(other, name="auth of someone else")
    listed = _lister(client, me)
    # Then a search matches anywhere in the name, ignoring case, only among the caller's contracts
    assert listed(q="auth") == ["billing AUTH", "Auth service"]
    assert listed(q="ERVI") == ["Auth service"]
    # And % _ \ match themselves, not any string or character
    assert listed(q="%") == ["100% done"]
    assert listed(q="0%") == ["100% done"]
    assert listed(q="_") == ["snake_case"]
    assert listed(q="a\\b") == ["a\\b"]
    assert listed(q="nothing like it") == []
    # And it combines with the other filters and pages
    assert listed(q="auth", status="created") == ["billing AUTH", "Auth service"]
    assert listed(q="auth", status="active") == []
    assert _walk(client, me, q="done") == ["1000 done", "100% done"]


def test_search_is_bounded(client: TestClient, user: Caller) -> None:
    for q in ("x" * 101, ""):
        r = client.get(f"{API}/contracts", params={"q": q}, headers=user.headers)
        assert (r.status_code, r.json()["error"]["code"]) == (422, "INVALID_REQUEST"), q
    ok = client.get(f"{API}/contracts", params={"q": "x" * 100}, headers=user.headers)
    assert (ok.status_code, ok.json()["contracts"]) == (200, [])


def test_type_filter_is_exact(
    client: TestClient, make_caller: Callable[..., Caller], new_contract: NewContract
) -> None:
    me = make_caller()
    new_contract(me, name="s1", contract_type="simple")
    new_contract(me, name="spec", contract_type="specification")
    new_contract(me, name="s2", contract_type="simple")
    listed = _lister(client, me)
    assert listed(contract_type="simple") == ["s2", "s1"]
    assert listed(contract_type="specification") == ["spec"]
    assert listed(contract_type="simp") == []
    assert listed(contract_type="simple", q="2") == ["s2"]
    bad = client.get(f"{API}/contracts", params={"contract_type": "Not a type!"}, headers=me.headers)
    assert bad.status_code == 422


def test_activity_sort_pages_by_cursor_and_cursors_keep_to_their_sort(
    client: TestClient, make_caller: Callable[..., Caller], new_contract: NewContract, database_url: str
) -> None:
    # Given five contracts created in order, last active in another order (two at the same instant)
    me = make_caller()
    ids = {name: new_contract(me, name=name)["id"] for name in ("a", "b", "c", "d", "e")}
    minutes_ago = {"a": 1, "b": 50, "c": 5, "d": 5, "e": 30}
    with psycopg.connect(database_url) as conn:
        for name, minutes in minutes_ago.items():
            conn.execute(
                "UPDATE contracts SET last_activity_at = date_trunc('minute', now()) - make_interval(mins => %s)"
                " WHERE id = %s",
                (minutes, ids[name]),
            )
    tied = sorted(["c", "d"], key=lambda n: ids[n], reverse=True)  # a tie is broken by id, descending
    by_activity = ["a", *tied, "e", "b"]
    # Then sort=activity lists the most recently active first, on one page and page by page
    listed = _lister(client, me)
    assert listed(sort="activity") == by_activity
    assert _walk(client, me, sort="activity") == by_activity
    # And created stays the default, newest first
    assert listed() == listed(sort="created") == ["e", "d", "c", "b", "a"]
    assert _walk(client, me, sort="created") == ["e", "d", "c", "b", "a"]
    # And activity combines with a filter
    assert listed(sort="activity", q="b") == ["b"]
    # And a cursor of one sort is refused by the other, as any cursor it did not hand out
    first = client.get(f"{API}/contracts", params={"limit": 2, "sort": "activity"}, headers=me.headers).json()
    created = client.get(f"{API}/contracts", params={"limit": 2}, headers=me.headers).json()
    for sort, cursor in (("created", first["next_cursor"]), ("activity", created["next_cursor"])):
        r = client.get(f"{API}/contracts", params={"sort": sort, "cursor": cursor}, headers=me.headers)
        assert (r.status_code, r.json()["error"]["code"]) == (400, "BAD_REQUEST"), sort
    bad = client.get(f"{API}/contracts", params={"sort": "name"}, headers=me.headers)
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "INVALID_REQUEST")


def test_admin_lists_every_owner_in_either_order(
    client: TestClient, make_caller: Callable[..., Caller], new_contract: NewContract
) -> None:
    a, b, admin_caller = make_caller(), make_caller(), make_caller(role=Role.ADMIN)
    marker = "adm-search-7f3"
    new_contract(a, name=f"{marker} one")
    new_contract(b, name=f"{marker} two")
    r = client.get(f"{API}/contracts", params={"q": marker, "sort": "activity"}, headers=admin_caller.headers)
    assert [x["name"] for x in r.json()["contracts"]] == [f"{marker} two", f"{marker} one"]
