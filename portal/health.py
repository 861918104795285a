"""GET /healthz: is the database answering, is the provider reachable, does the firewall take changes."""

import threading
import time

from flask import Blueprint, jsonify
from sqlalchemy import text

from . import services, settings
from .provider import ProviderError, ProviderRejected

bp = Blueprint("health", __name__)

PROVIDER_CHECK_SECONDS = 60  # balance.php allows 10 requests a minute; one a minute is plenty
_lock = threading.Lock()


def provider_status(svc):
    """{"ok": bool, "balance"|"error": …}, asking the provider at most once a minute."""
    with _lock:
        cached = svc.cache.get("provider_status")
        if cached and time.monotonic() - cached[0] < PROVIDER_CHECK_SECONDS:
            return cached[1]
        try:
            answer = {"ok": True, "balance": settings.provider().balance()}
        except ProviderRejected as exc:
            answer = {"ok": False, "error": f"provider error {exc.code}: {exc.text}"}
        except ProviderError as exc:
            answer = {"ok": False, "error": str(exc)}
        svc.cache["provider_status"] = (time.monotonic(), answer)
        return answer


@bp.get("/healthz")
def healthz():
    svc = services()
    try:
        with svc.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        database = {"ok": True}
    except Exception as exc:  # any driver error means the same thing here: not healthy
        database = {"ok": False, "error": type(exc).__name__}
    # The worker's last attempt, not a new one: /healthz must stay cheap at any set size.
    firewall = {"backend": svc.firewall.name, **svc.firewall_worker.status()}
    if firewall["failing_since"] is not None:
        firewall["failing_since"] = firewall["failing_since"].isoformat()
    body = {"database": database, "provider": provider_status(svc), "firewall": firewall}
    body["ok"] = database["ok"] and firewall["ok"]
    return jsonify(body), 200 if body["ok"] else 503
