"""Flask extensions, created unbound here and bound to the app in create_app().

The limiter counts in memory (one node) or in Redis (portal.ratelimit_storage = "redis://…"),
where every node of a chain sees the same counts. When Redis stops answering, each node goes on
counting in its own memory and goes back to Redis once it answers again; guests never see an
error for it.
"""

import logging
import threading

from flask import current_app, request
from flask_limiter import Limiter
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

log = logging.getLogger(__name__)


def _mend_memory_storage():
    """limits (5.8, its newest release) is not thread-safe in MemoryStorage, the default storage:
    - It starts its expiry timer without a lock. When two request threads count at the same
      instant, both can find no timer running and start one, or start the same one twice; that
      request then fails with "threads can only be started once", a 500 a guest saw under load.
      Here finding no timer and starting one are one step under a lock.
    - Its expiry round fails with a KeyError, printed as a thread's traceback, when a request
      thread drops the same expired key meanwhile. That key is gone, as the round wanted; here
      the round just ends, and the next one removes the rest.
    The timer's race is fixed upstream (alisaifee/limits#352) but in no release yet. This does
    nothing once limits renames these methods."""
    schedule = getattr(MemoryStorage, "_MemoryStorage__schedule_expiry", None)
    expire = getattr(MemoryStorage, "_MemoryStorage__expire_events", None)
    if schedule is None or expire is None or getattr(schedule, "callpass_mended", False):
        return
    lock = threading.Lock()

    def schedule_expiry(storage):
        with lock:
            schedule(storage)

    def expire_events(storage):
        try:
            expire(storage)
        except KeyError:
            pass

    schedule_expiry.callpass_mended = True
    MemoryStorage._MemoryStorage__schedule_expiry = schedule_expiry
    MemoryStorage._MemoryStorage__expire_events = expire_events


_mend_memory_storage()

# How long a request waits for Redis before the node counts in its own memory instead.
REDIS_OPTIONS = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}

NODE_MEMORY = FixedWindowRateLimiter(MemoryStorage())  # for hit() while Redis is away


def device_key():
    """Rate-limit key of a guest device: the socket's address (never a forwarded header)."""
    return request.remote_addr or "unknown"


limiter = Limiter(device_key)


def portal_setting(key):
    """A callable reading [portal] key at request time, for limits that live in the config."""
    return lambda: current_app.extensions["callpass"].config["portal"][key]


def limiter_config(storage_uri):
    """The Flask config keys for the limiter's storage."""
    shared = storage_uri.startswith(("redis://", "rediss://"))
    return {"RATELIMIT_STORAGE_URI": storage_uri,
            "RATELIMIT_STORAGE_OPTIONS": REDIS_OPTIONS if shared else {},
            "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": shared}


def hit(limit, *keys):
    """Count one more against limit for keys; False once the limit is used up. Counts in
    memory while the shared storage does not answer."""
    try:
        return limiter.limiter.hit(limit, *keys)
    except Exception as exc:
        log.warning("rate-limit storage: %s; counting in this node's memory", exc)
        return NODE_MEMORY.hit(limit, *keys)


def note(key, seconds):
    """Count key in the limiter's storage for seconds (shared by the nodes with Redis)."""
    try:
        limiter.limiter.storage.incr(key, seconds)
    except Exception as exc:  # Redis gone: the note is lost, nothing else
        log.warning("rate-limit storage: cannot note %s: %s", key, exc)


def noted(key):
    """Whether key was noted (see note) and has not run out."""
    try:
        return bool(limiter.limiter.storage.get(key))
    except Exception as exc:
        log.warning("rate-limit storage: cannot read %s: %s", key, exc)
        return False
