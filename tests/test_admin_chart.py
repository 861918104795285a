"""The overview's 30-day chart: calls confirmed and expired and guests per venue day, drawn as
inline SVG (no script, no external asset)."""

import re
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import insert

from admin_support import admin  # noqa: F401
from portal import settings, storage

ZONE = "Europe/Moscow"


def add_call(app, created, state, phone, session=True):
    with app.extensions["callpass"].engine.begin() as conn:
        conn.execute(insert(storage.verification).values(
            token=f"t{created.timestamp()}{phone}", phone=phone, mac="02:cc:00:00:00:11",
            ip="10.77.0.11", call_number="+74950000000", state=state, created_at=created,
            expires_at=created + timedelta(minutes=5)))
        if session:
            conn.execute(insert(storage.access_session).values(
                mac="02:cc:00:00:00:11", ip="10.77.0.11", phone=phone, started_at=created,
                ends_at=created + timedelta(hours=1)))


def day_titles(page):
    chart = page.split('id="chart"')[1].split("</svg>")[0]
    return re.findall(r"<g>\s*<title>([^<]*)</title>", chart), chart


def test_chart_counts_each_venue_day_and_draws_inline_svg(app, admin):
    settings.save(app.extensions["callpass"], {"venue.timezone": ZONE}, "test")
    zone = ZoneInfo(ZONE)
    today = datetime.now(zone).date()
    noon = datetime.combine(today, time(12), tzinfo=zone) - timedelta(days=1)  # yesterday
    add_call(app, noon, "confirmed", "+79161234567")
    add_call(app, noon + timedelta(minutes=1), "confirmed", "+79161234567")  # same guest
    add_call(app, noon + timedelta(minutes=2), "confirmed", "+79161234500")
    add_call(app, noon + timedelta(minutes=3), "expired", "+79161234501", session=False)
    add_call(app, noon - timedelta(days=30), "confirmed", "+79161234502")  # before the chart

    titles, chart = day_titles(admin.get("/admin/").get_data(as_text=True))
    assert len(titles) == 30
    assert titles[-1] == f"{today}: 0 guests, 0 calls confirmed, 0 expired"
    assert titles[-2] == f"{today - timedelta(days=1)}: 2 guests, 3 calls confirmed, 1 expired"
    assert all(t.endswith(": 0 guests, 0 calls confirmed, 0 expired") for t in titles[:-2])
    assert "<script" not in chart and "href" not in chart and "http" not in chart
    # The tallest bar (3 confirmed) reaches the top of the scale; an empty day draws nothing.
    heights = re.findall(r'class="confirmed" x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)"',
                         chart)
    assert float(heights[-2]) == 140.0 and float(heights[-1]) == 0.0

    russian, _chart = day_titles(admin.get("/admin/?lang=ru").get_data(as_text=True))
    assert russian[-2] == f"{today - timedelta(days=1)}: гостей 2, звонков подтверждено 3, " \
                          "просрочено 1"
