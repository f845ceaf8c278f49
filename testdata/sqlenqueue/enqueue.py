"""Enqueues relay jobs from Python with psycopg 3, as the README shows, for
TestSQLEnqueueFromPython: each enqueue in a transaction of its own.

Usage: enqueue.py DATABASE_URL. Prints one line per step for the Go test to check.
"""

import json
import sys

import psycopg
from psycopg.types.json import Jsonb


def main(url):
    with psycopg.connect(url) as conn:
        # One job: the transaction commits when the with block ends.
        with conn.transaction():
            row = conn.execute(
                "SELECT id, duplicate FROM relay.enqueue(%(kind)s, %(args)s, queue => %(queue)s,"
                " priority => %(priority)s, metadata => %(metadata)s, unique_key => %(key)s,"
                " unique_states => %(states)s)",
                {"kind": "py-email", "args": Jsonb({"to": "ada@example.com", "n": 1}), "queue": "py",
                 "priority": 5, "metadata": Jsonb({"tenant": "acme"}), "key": "welcome-ada",
                 "states": ["succeeded"]},
            ).fetchone()
            print("enqueued", row[0], row[1])

        # The same unique key again, held by the first job until it fails or is cancelled
        # (whether it has run yet or not): a duplicate, with the first job's id.
        with conn.transaction():
            row = conn.execute(
                "SELECT id, duplicate FROM relay.enqueue('py-email', %s, queue => 'py', unique_key => 'welcome-ada',"
                " unique_states => '{succeeded}')",
                (Jsonb({"to": "ada@example.com", "n": 99}),),
            ).fetchone()
            print("duplicate", row[0], row[1])

        # Rolled back: never runs.
        try:
            with conn.transaction():
                conn.execute("SELECT * FROM relay.enqueue('py-email', %s, queue => 'py')",
                             (Jsonb({"to": "nobody", "n": -1}),))
                raise RuntimeError("roll back")
        except RuntimeError:
            print("rolled back")

        # A batch, as a JSON array of specs.
        with conn.transaction():
            specs = [{"kind": "py-email", "args": {"to": "bob@example.com", "n": n}, "queue": "py"} for n in (2, 3)]
            rows = conn.execute("SELECT id, duplicate FROM relay.enqueue_many(%s)", (Jsonb(specs),)).fetchall()
            print("batch", " ".join(str(r[0]) for r in rows))

        # Bad input: a clear error, and nothing inserted.
        try:
            with conn.transaction():
                conn.execute("SELECT * FROM relay.enqueue('py-email', '{}', queue => 'py', priority => %s)", (40000,))
        except psycopg.Error as e:
            print("refused", e.sqlstate, json.dumps(e.diag.message_primary))


if __name__ == "__main__":
    main(sys.argv[1])
