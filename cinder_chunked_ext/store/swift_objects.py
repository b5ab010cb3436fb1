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

"""The connections, the writer and the reader of Swift objects.

* swiftclient's ``Connection`` holds one HTTP connection and is not
  thread-safe: :class:`ConnectionPool` keeps a few, built on first use
  and reused for the store's life, sharing one authentication.
* :class:`SwiftWriter` holds its object (at most one chunk) and sends it
  in one PUT on commit with its MD5 as ``ETag``: Swift refuses (422)
  data altered on the way, and nothing is visible before the commit.
* :class:`SwiftReader` streams the body; swiftclient resumes a download
  that broke off with a ranged GET (``If-Match`` the ETag) within its
  retry count, and a body that still ends early is an error.

Writers and readers run on native threads under eventlet: they never
log themselves.
"""

import hashlib

from cinder_chunked_ext import exception
from cinder_chunked_ext import locks
from cinder_chunked_ext.store import base
from cinder_chunked_ext.store import swift_errors

MiB = 1024 ** 2
#: Bytes per socket read of a download, and per send of an upload.
IO_CHUNK = MiB
#: Idle connections the pool keeps for reuse.
MAX_IDLE_CONNECTIONS = 16


class ConnectionPool(object):
    """swiftclient connections sharing one authentication.

    The first connection authenticates; the others start from the
    storage URL and token it obtained (and keep the credentials, so any
    of them can authenticate again when the token expires).
    """

    def __init__(self, settings):
        self._settings = settings
        self._lock = locks.native_lock()
        self._idle = []
        self._auth = None    # (storage URL, token) last seen
        self.created = 0

    def _new(self):
        s = self._settings
        args = dict(retries=s.retries, starting_backoff=s.backoff,
                    max_backoff=s.max_backoff, insecure=s.insecure,
                    cacert=s.ca_cert_file, timeout=s.timeout,
                    os_options=dict(s.os_options))
        if s.session is not None:
            args['session'] = s.session
        elif s.token:
            args.update(preauthurl=s.storage_url, preauthtoken=s.token)
        else:
            args.update(authurl=s.auth_url, user=s.user, key=s.key,
                        auth_version=s.auth_version)
        conn = swift_errors.swiftclient.Connection(**args)
        self.created += 1
        return conn

    def acquire(self):
        with self._lock:
            if self._idle:
                return self._idle.pop()
            auth = self._auth
        conn = self._new()
        if auth is not None and not self._settings.token:
            conn.url, conn.token = auth
        return conn

    def release(self, conn, reusable=True):
        token = getattr(conn, 'token', None)
        with self._lock:
            if token and conn.url:
                self._auth = (conn.url, token)
            if reusable and len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        close_quietly(conn)

    def close(self):
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            close_quietly(conn)


def close_quietly(conn):
    try:
        conn.close()
    except Exception:  # noqa: S110 - closing a broken connection
        pass


class _BufferReader(object):
    """A seekable file over a bytearray, without copying it whole.

    swiftclient re-sends a PUT after a failure only when it can seek the
    body back to its start.
    """

    def __init__(self, buffer):
        self._view = memoryview(buffer)
        self._pos = 0

    def read(self, size=-1):
        end = (len(self._view) if size is None or size < 0
               else min(len(self._view), self._pos + size))
        data = bytes(self._view[self._pos:end])
        self._pos = end
        return data

    def tell(self):
        return self._pos

    def seek(self, pos, whence=0):
        self._pos = pos if whence == 0 else (
            self._pos + pos if whence == 1 else len(self._view) + pos)
        return self._pos

    def release(self):
        self._view.release()


class SwiftWriter(base.ObjectWriter):
    """Holds the object; one PUT with its MD5 as ETag on commit."""

    def __init__(self, store, container, name):
        super().__init__()
        self._store = store
        self._container = container
        self._name = name
        self._buffer = bytearray()
        self._md5 = hashlib.md5(usedforsecurity=False)

    def _what(self):
        return 'cannot write object %s to container %s' % (self._name,
                                                           self._container)

    def _write(self, data):
        self._buffer += data
        self._md5.update(data)

    def _commit(self):
        etag = self._md5.hexdigest()
        body = _BufferReader(self._buffer)
        try:
            answered = self._store.call(
                'put_object', self._what(), self._container, self._name,
                contents=body, content_length=len(self._buffer),
                etag=etag, chunk_size=IO_CHUNK)
        finally:
            body.release()
            self._buffer = bytearray()
        if answered and answered.strip('"') != etag:
            raise exception.PermanentStoreError(
                reason='%s: Swift stored ETag %s for data whose MD5 is %s'
                       % (self._what(), answered, etag))

    def _abort(self):
        self._buffer = bytearray()


class SwiftReader(base.ObjectReader):
    """Streams an object's body from one connection of the pool."""

    def __init__(self, store, container, name):
        self._store = store
        self._container = container
        self._name = name
        self._received = 0
        self._conn = store.pool.acquire()
        self._body = None
        try:
            headers, self._body = store.call_on(
                self._conn, 'get_object', self._what(), container, name,
                resp_chunk_size=IO_CHUNK)
        except BaseException:
            store.pool.release(self._conn, reusable=False)
            self._conn = None
            raise
        self._size = int(headers.get('content-length', -1))

    def _what(self):
        return 'cannot read object %s from container %s' % (self._name,
                                                            self._container)

    def read(self, size=-1):
        if self._body is None:
            return b''
        if size == 0:
            return b''
        try:
            data = self._body.read(None if size is None or size < 0
                                   else size)
        except Exception as e:  # noqa - classified below
            error = swift_errors.classify(e, self._what(),
                                          self._store.settings.where)
            if error is None:
                raise
            raise error from None
        self._received += len(data)
        if not data and 0 <= self._received < self._size:
            raise exception.TransientStoreError(
                reason='%s: the download ended at byte %d of %d'
                       % (self._what(), self._received, self._size))
        return data

    def close(self):
        body, self._body = self._body, None
        conn, self._conn = self._conn, None
        if body is not None:
            try:
                body.close()
            except Exception:  # noqa: S110 - the body is dropped anyway
                pass
        if conn is not None:
            complete = self._received == self._size
            self._store.pool.release(conn, reusable=complete)
