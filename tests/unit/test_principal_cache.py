"""The principal cache's own rules (services/principal_cache.py): it answers only while live, a revocation
or a gap of its listener empties it, a lookup that raced a revocation cannot put the token back, and it
is bounded in entries and age. With the listener and the API on a real PostgreSQL:
tests/integration/test_principal_cache.py."""

from __future__ import annotations

import uuid

from makima.domain.principals import Principal, Role
from makima.services.principal_cache import PrincipalCache


def _principal() -> Principal:
    return Principal(user_id=uuid.uuid4(), role=Role.USER, token_id=uuid.uuid4())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_it_answers_only_while_its_listener_holds_the_listen() -> None:
    cache = PrincipalCache()
    p = _principal()
    cache.remember(b"a", p, cache.generation())
    assert cache.lookup(b"a") is None  # never resumed: nothing kept, nothing answered
    cache.resume()
    cache.remember(b"a", p, cache.generation())
    assert cache.lookup(b"a") == p
    cache.suspend()  # the listener lost its connection: a notice may be lost
    assert cache.lookup(b"a") is None
    cache.resume()
    assert cache.lookup(b"a") is None  # back, but empty: what was cached before the gap is looked up again


def test_forget_drops_every_entry_of_the_token_and_only_those() -> None:
    cache = PrincipalCache()
    cache.resume()
    revoked, other = _principal(), _principal()
    cache.remember(b"r", revoked, cache.generation())
    cache.remember(b"o", other, cache.generation())
    cache.forget(revoked.token_id)  # type: ignore[arg-type]
    assert cache.lookup(b"r") is None
    assert cache.lookup(b"o") == other


def test_a_lookup_that_raced_a_revocation_cannot_store_the_revoked_principal() -> None:
    cache = PrincipalCache()
    cache.resume()
    p = _principal()
    before = cache.generation()  # the request reads the generation, then runs its SELECT (token live) ...
    cache.forget(p.token_id)  # type: ignore[arg-type]  # ... while the revocation commits and is heard
    cache.remember(b"t", p, before)  # the SELECT's answer arrives after the revocation
    assert cache.lookup(b"t") is None
    cache.remember(b"t", p, cache.generation())  # a lookup that began after it would have found nothing
    assert cache.lookup(b"t") == p  # (this store only shows the generation is what refused the first)


def test_a_gap_of_the_listener_during_a_lookup_refuses_its_store() -> None:
    cache = PrincipalCache()
    cache.resume()
    p = _principal()
    before = cache.generation()
    cache.suspend()
    cache.resume()
    cache.remember(b"t", p, before)
    assert cache.lookup(b"t") is None


def test_it_is_bounded_in_entries_and_in_age() -> None:
    clock = Clock()
    cache = PrincipalCache(max_entries=3, max_age=60.0, clock=clock)
    cache.resume()
    ps = [_principal() for _ in range(4)]
    for i, p in enumerate(ps):
        cache.remember(bytes([i]), p, cache.generation())
    assert len(cache) == 3
    assert cache.lookup(bytes([0])) is None  # the oldest went first
    assert cache.lookup(bytes([3])) == ps[3]
    clock.now += 61
    assert cache.lookup(bytes([3])) is None  # past its age: looked up again
    assert len(cache) == 2
