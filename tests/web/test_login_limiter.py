"""The login limiter stops guessing without letting strangers lock a user out (issue #5)."""

from __future__ import annotations

from vpsmon.web.auth import LoginLimiter


def test_ten_failures_from_one_address_block_that_address_for_that_user_only() -> None:
    limiter = LoginLimiter()
    for _ in range(10):
        limiter.failed("198.51.100.1", "admin", 0.0)
    assert limiter.blocked("198.51.100.1", "admin", 1.0)
    assert not limiter.blocked("203.0.113.7", "admin", 1.0), "the owner elsewhere gets in"
    assert not limiter.blocked("198.51.100.1", "bob", 1.0)
    assert not limiter.blocked("198.51.100.1", "admin", 901.0), "the window passes"


def test_one_address_spraying_many_usernames_is_blocked_for_all() -> None:
    limiter = LoginLimiter()
    for i in range(50):
        limiter.failed("198.51.100.1", f"user{i}", 0.0)
    assert limiter.blocked("198.51.100.1", "someone-new", 1.0)
    assert not limiter.blocked("203.0.113.7", "someone-new", 1.0)


def test_many_addresses_against_one_user_hit_a_ceiling_that_spares_trusted_browsers() -> None:
    limiter = LoginLimiter()
    for i in range(200):
        limiter.failed(f"10.0.{i // 9}.{i % 9}", "admin", 0.0)
    assert limiter.blocked("203.0.113.7", "admin", 1.0)
    assert not limiter.blocked("203.0.113.7", "admin", 1.0, trusted_device=True)
    assert not limiter.blocked("203.0.113.7", "bob", 1.0)


def test_a_success_clears_that_address_and_user_pair() -> None:
    limiter = LoginLimiter()
    for _ in range(9):
        limiter.failed("198.51.100.1", "admin", 0.0)
    limiter.succeeded("198.51.100.1", "admin")
    limiter.failed("198.51.100.1", "admin", 1.0)
    assert not limiter.blocked("198.51.100.1", "admin", 2.0)


def test_the_limiter_forgets_old_keys_when_full() -> None:
    limiter = LoginLimiter(max_keys=30)
    for i in range(100):
        limiter.failed(f"10.0.0.{i}", f"u{i}", 0.0)
    assert len(limiter._failures) <= 33
