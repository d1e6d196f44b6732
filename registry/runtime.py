"""Per-process objects that hold keys and cached reference data, built once at start-up.

Everything here is safe to share between threads and holds no state that must be shared
between processes: keys are reloaded from the keyring and the database, and reference data
(jurisdictions) is a read-through cache refreshed on a miss and at most `JurisdictionCache.MAX_AGE`
seconds after it was loaded (so another process's change, such as a retirement, is seen within it).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from registry.async_database import AsyncDatabase
from registry.database import make_engine, make_session_factory
from registry.jurisdictions.models import Jurisdiction
from registry.nodes.federation import Federation
from registry.schedules.cache import ScheduleCache
from registry.settings import Settings
from registry.users.revocation import TokenGenerations
from security.audit import event_mac as audit_mac
from security.crypto.blind_index import BlindIndexer
from security.crypto.data_keys import DataKeyStore
from security.crypto.fields import FieldCipher
from security.crypto.kek_backends import KekRouter
from security.crypto.keyring import FileKeyring
from security.passwords import PasswordHasher
from security.tokens import TokenConfig, VerifiedTokens


@dataclass
class JurisdictionCache:
    factory: sessionmaker[Session]
    _nodes: dict[str, Jurisdiction] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loaded_at: float = float("-inf")
    MAX_AGE = 60.0  # seconds; `nhr jurisdictions retire` is seen by running APIs within this

    def get(self, code: str, session: Session) -> Jurisdiction | None:
        """On a miss (or when older than MAX_AGE), reload through the caller's session: a second
        connection would deadlock against the caller's own write transaction on SQLite (BEGIN IMMEDIATE)."""
        node = self._nodes.get(code)
        if node is None or time.monotonic() - self._loaded_at > self.MAX_AGE:
            self.refresh(session)
            node = self._nodes.get(code)
        return node

    def fresh(self, code: str) -> tuple[bool, Jurisdiction | None]:
        """(True, node) when `get` would answer without a query, else (False, None): the event
        loop then refreshes in a worker thread (`refresh()`, its own session)."""
        node = self._nodes.get(code)
        if node is None or time.monotonic() - self._loaded_at > self.MAX_AGE:
            return False, None
        return True, node

    def refresh(self, session: Session | None = None) -> None:
        if session is None:
            with self.factory() as s:
                self._load(s)
        else:
            self._load(session)

    def _load(self, session: Session) -> None:
        rows = session.execute(select(Jurisdiction.__table__)).all()
        nodes = {r.code: Jurisdiction(**r._mapping) for r in rows}
        with self._lock:
            self._nodes = nodes
            self._loaded_at = time.monotonic()


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    keyring: FileKeyring
    keys: DataKeyStore
    cipher: FieldCipher
    indexer: BlindIndexer
    hasher: PasswordHasher
    code_hasher: PasswordHasher
    tokens: TokenConfig
    verified_tokens: VerifiedTokens
    jurisdictions: JurisdictionCache
    token_generations: TokenGenerations  # revocable staff tokens: the per-process generation cache
    schedules: ScheduleCache = field(default_factory=ScheduleCache)  # parsed schedules, by row id
    federation: Federation | None = None  # a provincial node's peers and identity (issue 16 item 4), else None
    _pools: dict = field(default_factory=dict)  # event loop -> its AsyncDatabase (see `aio`)

    @classmethod
    def build(cls, settings: Settings, engine: Engine | None = None, *, provisioning: bool = False) -> Runtime:
        """`provisioning=True` is for the explicit key-provisioning commands (`nhr init`, `nhr keys
        init`): they may create missing keys even in production, where the API never does."""
        engine = engine or make_engine(settings.database_url, pool_size=settings.serve.db_pool_size)
        keyring = FileKeyring(settings.key_dir, create_missing=settings.create_missing_keys or provisioning)
        # Every audit event written through these sessions is MACed with this key (event_mac.py).
        sessions = make_session_factory(engine, info={audit_mac.INFO_KEY: audit_mac.EventMac(keyring.secret(audit_mac.SECRET_NAME))})

        def reload_keys(load) -> None:
            with engine.connect() as conn:
                load(conn.execution_options(isolation_level="AUTOCOMMIT"))

        kek = KekRouter(keyring, settings.key_backends, pkcs11_module=settings.pkcs11_module,
                        token_label=settings.pkcs11_token_label, pin_file=settings.pkcs11_pin_file, pin=settings.pkcs11_pin)
        keys = DataKeyStore(kek, reload_keys)
        tokens = TokenConfig(keyring.secret("token-signing"), settings.tokens.issuer, settings.tokens.audience, settings.tokens.ttl_seconds)
        return cls(
            settings=settings, engine=engine, sessions=sessions, keyring=keyring, keys=keys,
            cipher=FieldCipher(keys), indexer=BlindIndexer(keys),
            hasher=PasswordHasher(settings.passwords.argon2_memory_kib, settings.passwords.argon2_time_cost),
            # Access codes are random (~50 bits), not chosen by people: their strength is their
            # entropy, so a cheap argon2id keeps registration off the 30 ms password cost.
            code_hasher=PasswordHasher(memory_kib=2048, time_cost=1),
            tokens=tokens, verified_tokens=VerifiedTokens(tokens), jurisdictions=JurisdictionCache(sessions),
            token_generations=TokenGenerations(engine, settings.tokens.revocation_check_seconds),
            federation=Federation.from_settings(settings),
        )

    @property
    def event_mac(self) -> audit_mac.EventMac:
        return self.sessions.kw["info"][audit_mac.INFO_KEY]

    def warm(self) -> None:
        """Load keys and reference data before the first request."""
        self.load_keys()
        self.jurisdictions.refresh()

    @property
    def aio(self) -> AsyncDatabase | None:
        """The async pool of the running event loop (PostgreSQL, while an app serves on it), or
        None: on SQLite, outside a loop, or on a loop that did not open one. A pool belongs to
        the loop that opened it (tests run several apps, each on its own loop, over one Runtime)."""
        try:
            return self._pools.get(asyncio.get_running_loop())
        except RuntimeError:
            return None

    async def open_async(self) -> None:
        """Open the running loop's pool for the hot paths (PostgreSQL only); idempotent."""
        loop = asyncio.get_running_loop()
        if loop not in self._pools and self.engine.dialect.name == "postgresql":
            db = AsyncDatabase(self.settings.database_url, max_size=self.settings.serve.async_pool_size)
            db.event_mac = self.event_mac
            await db.open()
            self._pools[loop] = db

    async def close_async(self) -> None:
        db = self._pools.pop(asyncio.get_running_loop(), None)
        if db is not None:
            await db.close()

    def load_keys(self) -> None:
        """Load wrapped data keys; create missing ones for every province (idempotent)."""
        with self.engine.begin() as conn:
            provinces = [r[0] for r in conn.execute(select(Jurisdiction.code).where(Jurisdiction.level == "province"))]
            if self.settings.node.province is not None:  # a provincial node keeps keys for its own province only
                provinces = [p for p in provinces if p == self.settings.node.province]
            if self.keyring.create_missing:
                self.keys.ensure(conn, provinces)
            else:
                self.keys.load(conn)
