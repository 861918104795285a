"""Flask extensions, created unbound here and bound to the app in create_app().

The limiter counts in memory (one node) or in Redis (portal.ratelimit_storage = "redis://…"),
where every node of a chain sees the same counts. When Redis stops answering, each node goes on
counting in its own memory and goes back to Redis once it answers again; guests never see an
error for it.
"""

import logging

from flask import current_app, request
from flask_limiter import Limiter
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

log = logging.getLogger(__name__)

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
