"""`callpass backup FILE`: a consistent copy of the SQLite database while callpass writes to it
(SQLite's online backup API), which a restore puts back as it was."""

import shutil
import stat
import subprocess
import sys

from portal import auth, storage
from serve_support import write_config


def backup(config, target):
    return subprocess.run([sys.executable, "-m", "portal", "backup", str(target),
                           "--config", str(config)], capture_output=True, text=True)


def test_backup_while_in_use_restores_to_the_same_data(tmp_path):
    database = tmp_path / "callpass.sqlite3"
    config = write_config(tmp_path / "callpass.toml", database=f"sqlite:///{database}")
    engine = storage.connect(f"sqlite:///{database}")
    storage.upgrade(engine)
    auth.add_admin(engine, "venue", "a long enough password")
    assert (tmp_path / "callpass.sqlite3-wal").stat().st_size > 0  # the admin is in the WAL only

    result = backup(config, tmp_path / "copy.sqlite3")
    assert result.returncode == 0, result.stderr
    copy = tmp_path / "copy.sqlite3"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600  # it holds the identification log
    assert not (tmp_path / "copy.sqlite3-wal").exists()
    auth.add_admin(engine, "later", "another long password")
    engine.dispose()

    # Restore: with callpass stopped, the copy replaces the file and its WAL.
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"callpass.sqlite3{suffix}").unlink(missing_ok=True)
    shutil.copy(copy, database)
    engine = storage.connect(f"sqlite:///{database}")
    storage.upgrade(engine)
    assert [row.name for row in auth.list_admins(engine)] == ["venue"]
    engine.dispose()


def test_backup_says_what_is_wrong_and_writes_nothing(tmp_path):
    config = write_config(tmp_path / "callpass.toml",
                          database=f"sqlite:///{tmp_path / 'missing.sqlite3'}")
    result = backup(config, tmp_path / "copy.sqlite3")
    assert result.returncode == 1 and "there is no database" in result.stderr
    assert not list(tmp_path.glob("copy*"))

    config.write_text(config.read_text().replace(
        f"sqlite:///{tmp_path / 'missing.sqlite3'}", "postgresql+psycopg://callpass:pw@db/callpass"))
    result = backup(config, tmp_path / "copy.sqlite3")
    assert result.returncode == 1 and "pg_dump" in result.stderr and "pw@" not in result.stderr
