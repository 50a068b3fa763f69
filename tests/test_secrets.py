"""The MariaDB password never lands on disk: not in results/, logs/, .snakemake/ nor the report.

A MariaDB user with a password full of shell and SQL characters reads a throwaway PhotoPrism database;
the workflow gets the password from the environment (source.password_env) or from a MySQL option file
(source.option_file), runs every stage, builds ``snakemake --report``, and then every byte it wrote,
and its console output, is searched for the password in the encodings a file could hold it in.
"""

from __future__ import annotations

import base64
import html
import json
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.databases import MariaDBDatabase
from fixtures.library import build_small_library
from fixtures.runs import KEEP_ALL, copy_workflow, snakemake, write_config

pytestmark = [pytest.mark.mariadb, pytest.mark.snakemake]

PASSWORD = "pa$$ w0rd;-- $(echo) 'q' \"dq\" %20 ünï"
# MySQL option files take a double-quoted value; this one avoids the characters that need escapes there.
OPTION_FILE_PASSWORD = "opt$ pass;-- word %41 $HOME"
SEARCHED = ("results", "logs", ".snakemake", "report.html")


def _encodings(secret: str) -> set[bytes]:
    """The forms the secret could take in a file: raw, URL-, JSON-, HTML-escaped, repr'd, base64."""
    forms = {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        html.escape(secret),
        repr(secret)[1:-1],
    }
    encoded = {form.encode("utf-8") for form in forms}
    raw = secret.encode("utf-8")
    for shift in range(3):  # base64 of the secret at each alignment inside a longer blob
        blob = base64.b64encode(b"\0" * shift + raw + b"\0" * 3)
        # Keep the characters made of the secret's bits alone: bits [8 shift, 8 (shift + n)).
        encoded.add(blob[-(-4 * shift // 3) : 4 * (shift + len(raw)) // 3])
    return encoded


def _files(workdir: Path) -> Iterator[Path]:
    for name in SEARCHED:
        path = workdir / name
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from (p for p in path.rglob("*") if p.is_file())


def _leaks(workdir: Path, secret: str, console: str) -> list[str]:
    forms = _encodings(secret)
    found = [str(path) for path in _files(workdir) if any(form in path.read_bytes() for form in forms)]
    if any(form in console.encode("utf-8") for form in forms):
        found.append("(console output)")
    return found


@pytest.fixture
def mariadb_user(tmp_path):
    """A throwaway PhotoPrism database and a user that may only read it, with its password set."""
    database = MariaDBDatabase()
    user = f"lk_sec_{uuid.uuid4().hex[:8]}"
    cursor = database.admin.cursor()
    try:
        library = build_small_library(tmp_path / "library")
        engine = database.writable_engine()
        library.builder.write_database(engine)
        engine.dispose()
        # Bound parameters: the driver quotes the password as a string literal, whatever it holds.
        cursor.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, PASSWORD))
        cursor.execute(f"GRANT SELECT ON `{database.name}`.* TO %s@'%%'", (user,))
        url = database.url.replace("root@", f"{user}@")
        yield library, url, user, cursor
    finally:
        cursor.execute("DROP USER IF EXISTS %s@'%%'", (user,))
        database.drop()


def _run_everything(workdir: Path, env: dict[str, str]) -> str:
    run = snakemake(workdir, "--cores", "2", env=env)
    report = snakemake(workdir, "--report", "report.html", env=env)
    assert (workdir / "report.html").stat().st_size > 0
    return run.stdout + run.stderr + report.stdout + report.stderr


def test_password_from_the_environment_is_written_nowhere(tmp_path, mariadb_user):
    library, url, _user, _cursor = mariadb_user
    workdir = copy_workflow(tmp_path / "wf")
    write_config(workdir, library.root, source={"url": url, "password_env": "LK_SECRET_TEST_PW"}, select=KEEP_ALL)

    # Without the password the database refuses, in one line that does not name it.
    denied = snakemake(workdir, "-n", check=False, env={"LK_SECRET_TEST_PW": "wrong $ password"})
    assert denied.returncode == 1
    assert "Traceback" not in denied.stderr
    assert denied.stderr.strip().splitlines()[-1].startswith("likeness: cannot read the PhotoPrism database")
    assert "Access denied" in denied.stderr and "wrong $ password" not in denied.stdout + denied.stderr

    console = _run_everything(workdir, {"LK_SECRET_TEST_PW": PASSWORD})

    # The run really read the database with that password: every usable face was cropped and captioned.
    assert "cropped 6 of 6 faces" in console
    assert (workdir / "results" / "captions" / "captions.tsv").read_text().count("\n") > 1
    files = list(_files(workdir))
    assert any(".snakemake/metadata" in str(path) for path in files)
    assert _leaks(workdir, PASSWORD, console) == []


def test_password_from_an_option_file_is_written_nowhere(tmp_path, mariadb_user):
    library, url, user, cursor = mariadb_user
    cursor.execute("ALTER USER %s@'%%' IDENTIFIED BY %s", (user, OPTION_FILE_PASSWORD))
    option_file = tmp_path / "private" / "my.cnf"
    option_file.parent.mkdir()
    option_file.write_text(f'[client]\npassword="{OPTION_FILE_PASSWORD}"\n')
    workdir = copy_workflow(tmp_path / "wf")
    write_config(workdir, library.root, source={"url": url, "option_file": str(option_file)}, select=KEEP_ALL)

    console = _run_everything(workdir, {})

    assert "cropped 6 of 6 faces" in console
    assert _leaks(workdir, OPTION_FILE_PASSWORD, console) == []


def test_the_search_finds_a_planted_password(tmp_path):
    """The leak search itself: each encoding it looks for is found where it was planted."""
    for index, form in enumerate(sorted(_encodings(PASSWORD))):
        workdir = tmp_path / f"case{index}"
        (workdir / "logs").mkdir(parents=True)
        (workdir / "logs" / "x.log").write_bytes(b"prefix " + form + b" suffix")
        assert _leaks(workdir, PASSWORD, "") == [str(workdir / "logs" / "x.log")]
    for prefix in (b"<p>", b"<p>x", b"<p>xy"):  # each base64 alignment
        embedded = base64.b64encode(prefix + PASSWORD.encode() + b"</p>")
        (tmp_path / "report.html").write_bytes(b"data:text/html;base64," + embedded)
        assert _leaks(tmp_path, PASSWORD, "") == [str(tmp_path / "report.html")]
