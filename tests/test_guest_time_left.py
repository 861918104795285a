"""Time left on the 'you are online' page as people say it, rounded up: never less than is left."""

import re
from datetime import timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from portal import guest, settings
from portal.storage import utcnow


@pytest.mark.parametrize("left, said", [
    (timedelta(seconds=30), r"until \d\d:\d\d, 1 more minute\."),
    (timedelta(minutes=44, seconds=10), r"until \d\d:\d\d, 45 more minutes\."),
    (timedelta(minutes=90), r"until \d\d:\d\d, 90 more minutes\."),
    (timedelta(minutes=91), r"until \d\d:\d\d, about 2 more hours\."),
    (timedelta(minutes=239, seconds=30), r"until \d\d:\d\d, about 4 more hours\."),
    (timedelta(hours=47, minutes=59), r"until \d\d:\d\d, about 48 more hours\."),
    (timedelta(days=30, minutes=1), r"for about 31 more days\."),
])
def test_time_left_is_rounded_up_into_words(app, left, said):
    with app.test_request_context("/", headers={"Accept-Language": "en"}):
        assert re.fullmatch("This device is online " + said, guest.time_left(utcnow() + left))


def test_the_clock_time_is_the_venues(app):
    settings.save(app.extensions["callpass"], {"venue.timezone": "Asia/Vladivostok"}, "test")
    ends_at = utcnow() + timedelta(hours=3)
    local = ends_at.replace(tzinfo=timezone.utc).astimezone(ZoneInfo("Asia/Vladivostok"))
    with app.test_request_context("/", headers={"Accept-Language": "ru"}):
        assert f"до {local:%H:%M}," in guest.time_left(ends_at)
