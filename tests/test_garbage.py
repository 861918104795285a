"""Garbage in every field a guest (or a forger) can reach: a clear refusal, never a 500."""

import random
import string

import pytest
from conftest import CALLBACK_TOKEN

ALPHABET = string.printable + "\x00\u202e\ufeffяї٣𝟘"
GOOD_PHONE = "+79161234567"


@pytest.fixture
def cfg(cfg):
    """The usual config with terms to accept, so the terms check reads the garbage too."""
    cfg["venue"]["require_terms"] = True
    return cfg


def test_garbage_is_refused_cleanly_everywhere(guest):
    rnd = random.Random(7)
    for _ in range(300):
        junk = "".join(rnd.choice(ALPHABET) for _ in range(rnd.randint(0, 300)))
        started = guest.client.post("/", data={"phone": junk, "accept_terms": junk})
        assert started.status_code in (303, 400, 429), (junk, started.status_code)
        # A good number with garbage for the terms is not an accepted form.
        started = guest.client.post("/", data={"phone": GOOD_PHONE, "accept_terms": junk})
        assert started.status_code == 400, (junk, started.status_code)
        for path in (f"/wait/{junk[:50]}", f"/api/verifications/{junk[:50]}",
                     f"/?continue={junk}", "/api/captive"):
            assert guest.client.get(path).status_code < 500, path
        notified = guest.client.post(f"/callback/smsc/{CALLBACK_TOKEN}", data={
            "phone": junk, "ts": junk, "md5": junk, junk[:20] or "x": junk})
        assert notified.status_code in (200, 400, 403, 429), notified.status_code
