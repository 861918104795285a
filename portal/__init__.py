"""callpass: a Wi-Fi captive portal that identifies guests by a free incoming call."""

import logging
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask, current_app

from . import config as config_module
from . import firewall as firewall_module
from . import sessions, storage, verification
from .extensions import limiter, limiter_config
from .firewall_sync import FirewallWorker
from .provider import SmscClient

HERE = Path(__file__).resolve().parent


@dataclass
class Services:
    """What the views need besides the request: config, database, provider, firewall."""

    config: dict
    engine: object
    provider: object
    firewall: object
    firewall_worker: FirewallWorker  # started by `serve` and `demo`, not by create_app
    online: object                   # sessions.OnlineCache: who is online, for probes
    provider_slots: object           # a semaphore: provider calls in flight at once
    asking: object                   # verification.AskingLocks: one provider call per device
    is_demo: bool = False
    simulator_url: str = ""
    cache: dict = field(default_factory=dict)  # small per-app caches (provider status)


def services():
    """The Services of the running app."""
    return current_app.extensions["callpass"]


def asset_folder(name):
    """templates/ or static/: inside the package when installed from a wheel, else the checkout's."""
    packaged = HERE / name
    return packaged if packaged.is_dir() else HERE.parent / name


def create_app(config=None, *, demo=False, engine=None, provider=None, firewall=None,
               simulator_url=""):
    """Build the Flask app from a loaded config (defaults when None). No network, no schema work."""
    config = config if config is not None else config_module.defaults()
    app = Flask(__name__, template_folder=str(asset_folder("templates")),
                static_folder=str(asset_folder("static")))
    portal = config["portal"]
    app.config.update(
        SECRET_KEY=portal["secret_key"] or (secrets.token_hex(32) if demo else None),
        MAX_CONTENT_LENGTH=64 * 1024,
        **limiter_config(portal["ratelimit_storage"]),
        RATELIMIT_HEADERS_ENABLED=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=portal["public_url"].startswith("https://"),
    )
    engine = engine if engine is not None else storage.connect(portal["database"])
    firewall = firewall if firewall is not None else firewall_module.from_config(config, engine)
    online = sessions.OnlineCache(engine)
    from . import settings  # here, not at the top: settings needs this package loaded first

    # The worker runs `up` with these arguments when it starts (so the chains follow the config:
    # another LAN, port or TLS port, a newer script) and when the table vanishes (`nft flush
    # ruleset`); then it puts back the walled garden, the sessions and the provider addresses.
    firewall_worker = FirewallWorker(
        engine, firewall, on_applied=online.clear,
        table=firewall_module.table_of(config),
        restore=lambda: settings.sync_garden(app.extensions["callpass"]))
    app.extensions["callpass"] = Services(
        config=config,
        engine=engine,
        online=online,
        provider=provider if provider is not None else SmscClient.from_config(config["provider"]),
        firewall=firewall,
        firewall_worker=firewall_worker,
        provider_slots=threading.BoundedSemaphore(config["provider"]["max_concurrent"]),
        asking=verification.AskingLocks(),
        is_demo=demo,
        simulator_url=simulator_url,
    )
    limiter.init_app(app)

    from . import (admin, callback, captive, errors, guest, health, i18n, opennds_remote, radius,
                   routers)
    i18n.init_app(app)
    app.register_blueprint(captive.bp)
    app.wsgi_app = captive.CaptiveGate(app)
    app.register_blueprint(guest.bp)
    app.register_blueprint(callback.bp)
    app.register_blueprint(radius.bp)
    app.register_blueprint(routers.bp)
    app.register_blueprint(opennds_remote.bp)
    app.register_blueprint(health.bp)
    admin.init_app(app)
    errors.register(app)
    logging.getLogger("portal").setLevel(logging.INFO)
    return app
