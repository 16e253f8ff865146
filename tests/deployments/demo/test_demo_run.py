"""The demo (`make demo`) on the MongoDB stage: it stages where RESTFUL_ETL_STAGE_URL says and shows where,
without the password."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pymongo
import pytest

from prefect_restful_etl.tasks.engine.stage.mongo import INDEXES, JOBS, RECORDS

from fixtures.servers.secantus import SecantusServer

pytestmark = pytest.mark.integration


def test_the_demo_stages_in_mongodb_and_shows_where_without_the_password(
    tmp_path: Path, private_mongo_server: SecantusServer
) -> None:
    url = private_mongo_server.url_for("demo")
    password = private_mongo_server.password
    assert password and password in url
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_", "RESTFUL_ETL_"))}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "RESTFUL_ETL_HOME": str(tmp_path), "RESTFUL_ETL_STAGE_URL": url}
    # the demo's ephemeral Prefect server migrates a fresh database: on a busy machine that outlasts 20 s
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"

    done = subprocess.run(
        [sys.executable, "-m", "prefect_restful_etl.deployments.demo"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )

    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert f"stage: mongodb://127.0.0.1:{private_mongo_server.port}/demo\n" in done.stdout
    assert password not in output
    words = " ".join(done.stdout.split())  # rich wraps a table's title to the table's width
    assert words.count("for tenant 'demo': COMPLETED") == 2  # the full sync and the incremental one
    batches = re.findall(r"^batch id (\S+)$", done.stdout, flags=re.MULTILINE)
    assert len(batches) == 2
    assert "customer 5 reached the accounting API by hook in" in words  # the last step: a hook, through Mongo
    # both batches staged there and dropped their documents (the hook receiver's intake, which the demo runs
    # last, keeps its own)
    with pymongo.MongoClient(url) as client:
        db = client.get_default_database()
        assert RECORDS in db.list_collection_names() and JOBS in db.list_collection_names()
        left = {doc["batch"] for name in (RECORDS, JOBS, INDEXES) for doc in db[name].find({}, {"batch": True})}
        assert not [prefix for prefix in left if any(batch in prefix for batch in batches)]
