"""The campaign benchmark's options and its devices: accounts, and which children each one
vaccinates and looks up (`python -m bench.campaign`, bench/README.md)."""

from __future__ import annotations

import http.client
import json
import random
import secrets
import threading
from collections import defaultdict
from dataclasses import dataclass, field

import psycopg

from bench.population import settings_for

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Options:
    devices: int = 200
    doses: int = 50            # campaign doses per device (one per child of its catchment)
    registrations: int = 2     # newborns registered per device, each with BCG and OPV 0
    refusals: int = 3          # refusals per device (dose.record, status not-done)
    lookups: int = 5           # children per device found by identifier (search by B-form) before the upload
    drop_rate: float = 0.1     # share of devices whose first upload loses its connection
    workers: tuple[int, ...] = (1, 2, 4)
    concurrency: int = 0       # devices uploading at once; 0: all of them (the burst)
    scale: int = 0             # patients loaded; 0: enough for the devices' children (at least 20,000)
    floor_seconds: float = 5.0  # seconds of the trivial endpoint and of COPY per round
    server_url: str = DEFAULT_SERVER
    keep: bool = False
    profile: bool = False      # py-spy (GIL samples) of the registry workers during the first burst
    json_path: str | None = None
    seed: int = 2026
    quiet: bool = False

    @classmethod
    def quick(cls, **kw) -> Options:
        """A tiny campaign for the smoke test: every part runs, nothing is meant to be timed."""
        base = dict(devices=4, doses=5, registrations=1, refusals=1, lookups=2, drop_rate=0.5, workers=(1,),
                    scale=400, floor_seconds=1.0)
        return cls(**{**base, **kw})

    def resolved_scale(self) -> int:
        return self.scale or max(20_000, 2 * self.devices * (self.doses + self.refusals))


# --- the plan: who uploads what ----------------------------------------------------------------

@dataclass
class Device:
    index: int
    facility: str
    username: str
    password: str = field(repr=False)
    children: list[str] = field(default_factory=list, repr=False)        # campaign doses (existing children)
    refused: list[str] = field(default_factory=list, repr=False)         # refusals (existing children)
    lookups: list[tuple[str, str]] = field(default_factory=list, repr=False)  # (B-form, expected id)
    drops: bool = False
    token: str = field(default="", repr=False)


def plan(url: str, key_dir: str, opts: Options) -> list[Device]:
    """Accounts and children: devices are spread over the facilities round robin; each facility's
    children are shared among its devices, so no child gets two campaign doses in one burst.
    The accounts are created with cheap argon2 parameters (the registry rehashes them with its
    own at the first login; logins are not what this measures)."""
    from registry.patients import codec
    from registry.runtime import Runtime
    from registry.settings import Settings
    from registry.users.schemas import UserCreate
    from registry.users.service import create_user

    rng = random.Random(opts.seed)
    with psycopg.connect(url) as c:
        rows = c.execute("SELECT id, home_facility, custodian, bform_ct FROM patients ORDER BY id").fetchall()
    by_facility: dict[str, list] = defaultdict(list)
    for r in rows:
        by_facility[r[1]].append(r)
    facilities = sorted(by_facility, key=lambda f: (-len(by_facility[f]), f))
    step = max(1, round(1 / opts.drop_rate)) if opts.drop_rate > 0 else 0
    devices = [Device(i, facilities[i % len(facilities)], f"campaign.d{i:04d}.{secrets.token_hex(3)}",
                      secrets.token_urlsafe(24), drops=bool(step) and i % step == 0) for i in range(opts.devices)]
    settings = Settings(**{**settings_for(url, key_dir).model_dump(),
                           "passwords": {"argon2_memory_kib": 1024, "argon2_time_cost": 1}})
    rt = Runtime.build(settings)
    rt.load_keys()
    per_device = opts.doses + opts.refusals
    for fac in facilities:
        mine = [d for d in devices if d.facility == fac]
        if not mine:
            continue
        kids = by_facility[fac][:]
        rng.shuffle(kids)
        for k, d in enumerate(mine):
            share = kids[k * per_device:(k + 1) * per_device]
            d.children = [str(r[0]) for r in share[:opts.doses]]
            d.refused = [str(r[0]) for r in share[opts.doses:]]
            with_bform = [r for r in share[:opts.doses] if r[3] is not None][:opts.lookups]
            for pid, _, custodian, blob in with_bform:
                row = type("Row", (), {"id": pid, "custodian": custodian, "bform_ct": blob})
                d.lookups.append((codec.decrypt_column(rt.cipher, row, "bform"), str(pid)))
    with rt.sessions.begin() as s:
        for d in devices:
            create_user(s, rt, UserCreate(username=d.username, display_name=f"Campaign vaccinator {d.index}",
                                          password=d.password, role="clinic_worker", scope_code=d.facility))
    rt.engine.dispose()
    return devices


def login_all(base: str, devices: list[Device], threads: int = 4) -> None:
    parts = base.split("://", 1)[1].split(":")
    host, port = parts[0], int(parts[1])

    def one(d: Device) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        body = f"username={d.username}&password={d.password}"
        conn.request("POST", "/api/v1/auth/token", body, {"Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        if resp.status != 200:
            raise RuntimeError(f"login of campaign device {d.index} answered {resp.status}")
        d.token = json.loads(payload)["access_token"]

    _parallel(one, devices, threads)


def _parallel(fn, items: list, threads: int) -> None:
    errors: list[BaseException] = []
    queue = list(items)
    lock = threading.Lock()

    def loop() -> None:
        while True:
            with lock:
                if not queue or errors:
                    return
                item = queue.pop()
            try:
                fn(item)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                with lock:
                    errors.append(exc)

    ts = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
