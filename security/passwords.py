"""Password hashing (argon2id) and the password policy (NIST SP 800-63B-4).

Invariants:
- Hashes are argon2id at OWASP's parameters (19 MiB, t=2, p=1) unless settings say otherwise;
  `needs_rehash` lets login upgrade old hashes transparently.
- The policy is length over composition: at least `min_length` characters (15 for a password
  that is the only factor), at most 128, no composition rules; refused if it is a known common
  or breached password, or contains the username or the service name.
- Verification of an unknown user still spends one hash (`verify_dummy`) so that timing does
  not reveal which usernames exist.
- At most `max_concurrent` hashes run at once per process (default: the CPU count): each takes
  19 MiB, and a burst of logins across a 40-thread pool would otherwise hold ~800 MiB per worker
  and starve every other request of CPU.
- A hash's 19 MiB go back to the operating system when it ends. glibc raises its mmap threshold
  the first time a large block is freed, after which each 19 MiB buffer comes from the calling
  thread's malloc arena and stays there: with 40 threads over up to 8 arenas a core, a burst of
  logins left an API worker at 390-480 MiB (bench, 2026-12-03) although only two hashes ever ran
  at once. A fixed threshold (`_large_blocks_unmapped`) keeps every block of 1 MiB or more
  mmap'd, so it is unmapped when freed (tests/test_password_memory.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path

from passlib.hash import argon2

MAX_LENGTH = 128


class PasswordRejected(ValueError):
    """The password breaks the policy; the message says why, never echoing the password."""


_M_MMAP_THRESHOLD = -3  # mallopt(3)
MMAP_THRESHOLD_BYTES = 1 << 20


@cache
def _large_blocks_unmapped() -> bool:
    """Fix glibc's mmap threshold at 1 MiB for this process (once); False where there is no glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return bool(libc is not None and hasattr(libc, "mallopt") and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except OSError:
        return False


class PasswordHasher:
    def __init__(self, memory_kib: int = 19456, time_cost: int = 2, parallelism: int = 1,
                 max_concurrent: int | None = None) -> None:
        _large_blocks_unmapped()
        self._hasher = argon2.using(type="ID", memory_cost=memory_kib, rounds=time_cost, parallelism=parallelism)
        self._slots = threading.BoundedSemaphore(max_concurrent or os.cpu_count() or 2)
        self._dummy = self._hasher.hash("dummy password for timing equalisation")

    def hash(self, password: str) -> str:
        with self._slots:
            return self._hasher.hash(password)

    def verify(self, password: str, hashed: str) -> bool:
        try:
            with self._slots:
                return self._hasher.verify(password, hashed)
        except (ValueError, TypeError):
            return False

    def needs_rehash(self, hashed: str) -> bool:
        return self._hasher.needs_update(hashed)

    def verify_dummy(self, password: str) -> None:
        with self._slots:
            self._hasher.verify(password, self._dummy)


@lru_cache(maxsize=4)
def _blocklist(extra_file: str | None) -> frozenset[str]:
    words = resources.files("security").joinpath("data/common-passwords.txt").read_text().split()
    if extra_file:
        words += Path(extra_file).read_text(errors="ignore").split()
    return frozenset(w.strip().lower() for w in words if w.strip())


def check_policy(password: str, *, username: str, min_length: int, breached_file: str | None = None) -> None:
    if len(password) < min_length:
        raise PasswordRejected(f"password must be at least {min_length} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordRejected(f"password must be at most {MAX_LENGTH} characters")
    lowered = password.lower()
    if lowered in _blocklist(breached_file):
        raise PasswordRejected("password is a commonly used or breached password")
    if username and username.lower() in lowered:
        raise PasswordRejected("password must not contain the username")
    if len(set(lowered)) < 4:
        raise PasswordRejected("password is too repetitive")
    for context in ("nhr", "registry", "password"):
        if lowered.replace(context, "") == "" or lowered.startswith(context * 2):
            raise PasswordRejected("password is made of the service name or common words")
