#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.

"""SQLite transactions that take the write lock when they begin.

Loaded by the live Cinder's services only (their ``PYTHONPATH`` names
this directory; Python imports ``sitecustomize`` at start-up).  oslo.db
begins every SQLite transaction with a plain (deferred) ``BEGIN``: a
transaction that reads and then writes must upgrade its lock, and when
another process wrote meanwhile SQLite fails it at once with "database
is locked" -- the busy timeout does not apply.  Four Cinder services on
one SQLite file met that in these tests (a 500 from the API, a restore
left in ``restoring``).  ``BEGIN IMMEDIATE`` takes the write lock at
the start, so transactions wait for each other instead.  A real
deployment uses MySQL or PostgreSQL; nothing of Cinder is changed.
"""

import sqlite3
from sqlite3 import dbapi2

_connect = sqlite3.connect


class _ImmediateCursor(sqlite3.Cursor):

    def execute(self, sql, *args, **kwargs):
        if isinstance(sql, str) and sql.strip().upper() == 'BEGIN':
            sql = 'BEGIN IMMEDIATE'
        return super().execute(sql, *args, **kwargs)


class _ImmediateConnection(sqlite3.Connection):

    def cursor(self, factory=_ImmediateCursor):
        return super().cursor(factory)

    def execute(self, sql, *args, **kwargs):
        return self.cursor().execute(sql, *args, **kwargs)


def _immediate_connect(*args, **kwargs):
    kwargs.setdefault('factory', _ImmediateConnection)
    return _connect(*args, **kwargs)


# SQLAlchemy's pysqlite dialect connects through sqlite3.dbapi2.
sqlite3.connect = dbapi2.connect = _immediate_connect
