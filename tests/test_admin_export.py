"""The identification log as venue staff open it: in LibreOffice Calc (and so Excel), in their
language, in the venue's time zone, with phone numbers kept as text with their +."""

import shutil
import subprocess
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert

from admin_support import admin  # noqa: F401
from portal import settings, storage

T0 = datetime(2025, 3, 1, 9, 30, 15, tzinfo=timezone.utc)
OFFICE = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"


def add_session(app, phone, started, mac="02:cc:00:00:00:11", reason="expired"):
    with app.extensions["callpass"].engine.begin() as conn:
        conn.execute(insert(storage.access_session).values(
            mac=mac, ip="10.77.0.11", phone=phone, started_at=started,
            ends_at=started + timedelta(hours=1), ended_at=started + timedelta(hours=1),
            end_reason=reason))


def use_zone(app, name):
    settings.save(app.extensions["callpass"], {"venue.timezone": name}, "test")


def calc_cells(tmp_path, csv_bytes, separator, language):
    """[(value type, text)] per row, as LibreOffice Calc reads the CSV (headless --convert-to):
    separator given, UTF-8, the spreadsheet language's number and date rules (LANGID)."""
    soffice = shutil.which("soffice")
    if soffice is None:
        pytest.skip("LibreOffice Calc is not installed (Debian: libreoffice-calc-nogui)")
    source = tmp_path / "export.csv"
    source.write_bytes(csv_bytes)
    options = f"CSV:{ord(separator)},34,76,1,,{language}"  # 76: UTF-8; 1: from the first line
    subprocess.run([soffice, f"-env:UserInstallation=file://{tmp_path}/profile", "--headless",
                    f"--infilter={options}", "--convert-to", "fods", "--outdir", str(tmp_path),
                    str(source)], check=True, capture_output=True, timeout=120)
    tree = ET.parse(tmp_path / "export.fods")
    rows = []
    for row in tree.iter(f"{{{TABLE}}}table-row"):
        cells = []
        for cell in row.findall(f"{{{TABLE}}}table-cell"):
            repeated = int(cell.get(f"{{{TABLE}}}number-columns-repeated", "1"))
            cells += [(cell.get(f"{{{OFFICE}}}value-type"), "".join(cell.itertext()).strip())
                      ] * min(repeated, 20)  # empty cells to the sheet's end come as one
        rows.append(cells)
    return rows


@pytest.mark.parametrize("separator, language, page_language, phone_title", [
    (",", 1033, "en", "Phone"),        # en-US
    (";", 1049, "ru", "Телефон"),      # ru-RU: Excel there expects semicolons
    (";", 1058, "uk", "Телефон"),      # uk-UA
])
def test_calc_keeps_phone_numbers_as_text_and_reads_times_as_dates(
        app, admin, tmp_path, separator, language, page_language, phone_title):
    use_zone(app, "Europe/Moscow")
    add_session(app, "+79161234567", T0)
    add_session(app, "+380441234567", T0 + timedelta(hours=1), mac="02:cc:00:00:00:12")
    sep = "semicolon" if separator == ";" else "comma"
    response = admin.get(f"/admin/log.csv?sep={sep}&lang={page_language}")
    rows = calc_cells(tmp_path, response.get_data(), separator, language)
    header, moscow, kyiv = rows[0], rows[1], rows[2]
    assert header[0] == ("string", phone_title)
    assert header[5][1].endswith("(Europe/Moscow)")
    assert moscow[0] == ("string", "+7 916 123-45-67")
    assert kyiv[0] == ("string", "+380 44 123 4567")
    assert moscow[1] == ("string", "02:cc:00:00:00:11")
    assert moscow[2] == ("string", "10.77.0.11")
    assert moscow[5][0] == "date"  # session start: a date and time Calc can sort and filter
    assert "12:30:15" in moscow[5][1]  # 09:30:15 UTC is 12:30:15 in Moscow


def test_export_speaks_the_admins_language_and_names_the_days(app, admin):
    use_zone(app, "Europe/Kyiv")
    add_session(app, "+79161234567", T0, reason="admin")
    response = admin.get("/admin/log.csv?from=2025-03-01&to=2025-03-31&lang=uk")
    assert response.headers["Content-Disposition"] == \
        'attachment; filename="identifications_2025-03-01_2025-03-31.csv"'
    lines = response.get_data(as_text=True).lstrip("\ufeff").splitlines()
    assert lines[0].startswith("Телефон,") and lines[0].endswith(",Байтів до пристрою")
    assert "(Europe/Kyiv)" in lines[0]
    assert "2025-03-01 11:30:15" in lines[1]  # 09:30:15 UTC is 11:30:15 in Kyiv (EET)
    assert "завершено адміністратором" in lines[1]  # "ended by an admin" in words, not "admin"
    whole = admin.get("/admin/log.csv").headers["Content-Disposition"]
    today = datetime.now(timezone.utc).astimezone(settings.venue_zone({"timezone": "Europe/Kyiv"}))
    assert whole == f'attachment; filename="identifications_2025-03-01_{today.date()}.csv"'
