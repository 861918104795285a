"""GET /healthz: is the database answering, is the provider reachable, does the firewall take changes.

Guests can reach it too, so it is cheap at any rate (the database is asked at most once a
second, the provider at most once a minute, and the firewall's state is the worker's last
attempt: no firewall script runs for it)
and tells a guest only whether the portal is healthy. The details (provider balance and errors,
firewall errors) go to this machine (loopback: monitoring, `curl` on the gateway) and to a
signed-in admin.
"""

import ipaddress
import threading
import time

from flask import Blueprint, jsonify, request
from sqlalchemy import text

from . import auth, services, settings
from .provider import ProviderError, ProviderRejected

bp = Blueprint("health", __name__)

PROVIDER_CHECK_SECONDS = 60  # balance.php allows 10 requests a minute; one a minute is plenty
CHECK_SECONDS = 1
_lock = threading.Lock()


def remembered(svc, key, seconds, ask):
    """ask()'s answer, asked at most once every `seconds` (kept in svc.cache under key)."""
    with _lock:
        cached = svc.cache.get(key)
        if cached and time.monotonic() - cached[0] < seconds:
            return cached[1]
    answer = ask()
    with _lock:
        svc.cache[key] = (time.monotonic(), answer)
    return answer


def provider_status(svc):
    """{"ok": bool, "balance"|"error": …}, asking the provider at most once a minute."""
    return remembered(svc, "provider_status", PROVIDER_CHECK_SECONDS, ask_provider)


def ask_provider():
    try:
        return {"ok": True, "balance": settings.provider().balance()}
    except ProviderRejected as exc:
        return {"ok": False, "code": exc.code, "error": f"provider error {exc.code}: {exc.text}"}
    except ProviderError as exc:
        return {"ok": False, "error": str(exc)}


def forget_provider_status(svc):
    """Ask the provider afresh next time (its settings changed)."""
    with _lock:
        svc.cache.pop("provider_status", None)


def database_status(svc):
    """{"ok": bool[, "error"]}, asking the database at most once every CHECK_SECONDS."""
    def ask():
        try:
            with svc.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return {"ok": True}
        except Exception as exc:  # any driver error means the same thing here: not healthy
            return {"ok": False, "error": type(exc).__name__}

    return remembered(svc, "database_status", CHECK_SECONDS, ask)


def checks(svc):
    """The full health report. The firewall's part is the worker's own state, as it is now."""
    database = database_status(svc)
    firewall = {"backend": svc.firewall.name, **svc.firewall_worker.status()}
    for moment in ("failing_since", "recreated_at"):
        if firewall.get(moment) is not None:
            firewall[moment] = firewall[moment].isoformat()
    return {"ok": database["ok"] and firewall["ok"], "database": database,
            "provider": provider_status(svc), "firewall": firewall}


def may_see_details(svc):
    """This machine (loopback) or a signed-in admin."""
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or auth.signed_in_admin(svc.engine) is not None


@bp.get("/healthz")
def healthz():
    svc = services()
    report = checks(svc)
    body = report if may_see_details(svc) else {"ok": report["ok"]}
    return jsonify(body), 200 if report["ok"] else 503
