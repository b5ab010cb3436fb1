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

"""The writer and reader of one S3 object.

A writer holds up to the multipart threshold and sends one PUT (with
Content-MD5 and the SSE-C parameters when configured); a larger object
becomes a multipart upload, aborted when the writer fails.  A reader
streams the body and resumes a broken stream with a ranged GET
conditional on the object's ETag.
"""

import base64
import hashlib

from cinder_chunked_ext import exception
from cinder_chunked_ext.store import base
from cinder_chunked_ext.store import s3_errors

#: S3's largest number of parts in one multipart upload.
MAX_PARTS = 10000
#: What a reader reads at once when asked for the whole object.
DRAIN_STEP = 8 * 1024 ** 2


def content_md5(data):
    """The base64 MD5 digest sent as Content-MD5."""
    return base64.b64encode(
        hashlib.md5(data, usedforsecurity=False).digest()).decode('ascii')


class S3Writer(base.ObjectWriter):
    """One PUT up to the threshold, a multipart upload beyond it."""

    def __init__(self, store, bucket, key):
        super().__init__()
        self._store = store
        self._bucket = bucket
        self._key = key
        self._buffer = bytearray()
        self._upload_id = None
        self._parts = []

    def _what(self):
        return 'cannot write object %s to bucket %s' % (self._key,
                                                        self._bucket)

    def _write(self, data):
        self._buffer += data
        if self._upload_id is None:
            if len(self._buffer) <= self._store.settings.multipart_threshold:
                return
            self._start_multipart()
        self._send_full_parts()

    def _start_multipart(self):
        response = self._store.call(
            'create_multipart_upload', self._what(),
            Bucket=self._bucket, Key=self._key,
            **self._store.settings.sse_args())
        self._upload_id = response['UploadId']

    def _next_part_size(self):
        return self._store.settings.part_size(len(self._parts) + 1)

    def _send_full_parts(self):
        while len(self._buffer) >= self._next_part_size():
            size = self._next_part_size()
            with memoryview(self._buffer) as view:
                part = bytes(view[:size])
            del self._buffer[:size]
            self._send_part(part)

    def _send_part(self, data):
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise exception.PermanentStoreError(
                reason='%s: more than %d parts' % (self._what(), MAX_PARTS))
        args = dict(Bucket=self._bucket, Key=self._key,
                    UploadId=self._upload_id, PartNumber=number,
                    Body=data, ContentLength=len(data),
                    **self._store.settings.sse_args())
        if self._store.settings.md5_validation:
            args['ContentMD5'] = content_md5(data)
        response = self._store.call('upload_part', self._what(), **args)
        self._parts.append({'PartNumber': number, 'ETag': response['ETag']})

    def _commit(self):
        if self._upload_id is None:
            self._put_whole()
        else:
            if self._buffer or not self._parts:
                part = bytes(self._buffer)
                self._buffer = bytearray()
                self._send_part(part)
            self._store.call(
                'complete_multipart_upload', self._what(),
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                MultipartUpload={'Parts': self._parts})
            self._upload_id = None
        self._buffer = bytearray()

    def _put_whole(self):
        # bytes, which every HTTP stack (and moto) accepts as a body.
        data = bytes(self._buffer)
        self._buffer = bytearray()
        args = dict(Bucket=self._bucket, Key=self._key, Body=data,
                    ContentLength=len(data),
                    **self._store.settings.sse_args())
        if self._store.settings.md5_validation:
            args['ContentMD5'] = content_md5(data)
        self._store.call('put_object', self._what(), **args)

    def _abort(self):
        self._buffer = bytearray()
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            return
        try:
            self._store.call('abort_multipart_upload', self._what(),
                             Bucket=self._bucket, Key=self._key,
                             UploadId=upload_id)
        except exception.StoreError:
            # Writers must not log (they run on native threads); parts of
            # an unfinished upload are invisible, and a bucket lifecycle
            # rule for incomplete uploads removes them.
            pass


class S3Reader(base.ObjectReader):
    """Streams an object; resumes a broken stream with a ranged GET."""

    def __init__(self, store, bucket, key):
        self._store = store
        self._bucket = bucket
        self._key = key
        self._offset = 0
        self._size = None
        self._etag = None
        self._body = None
        # Why the reader gave up: later reads fail at once rather than
        # spend another round of attempts each.
        self._gave_up = None
        self._open()

    def _what(self):
        return 'cannot read object %s from bucket %s' % (self._key,
                                                         self._bucket)

    def _open(self):
        args = dict(Bucket=self._bucket, Key=self._key,
                    **self._store.settings.sse_args())
        if self._offset:
            args['Range'] = 'bytes=%d-' % self._offset
            if self._etag:
                args['IfMatch'] = self._etag
        response = self._store.call('get_object', self._what(),
                                    reading=True, **args)
        if self._size is None:
            self._size = response.get('ContentLength')
            self._etag = response.get('ETag')
        self._body = response['Body']

    def _drop_body(self):
        body, self._body = self._body, None
        if body is not None:
            try:
                body.close()
            except s3_errors.STREAM_ERRORS:
                pass

    def _read_some(self, size):
        if self._gave_up is not None:
            raise exception.TransientStoreError(reason=self._gave_up)
        attempts = max(1, self._store.settings.retry_max_attempts)
        failures = 0
        while True:
            try:
                if self._body is None:
                    self._open()
                data = self._body.read(size)
            except s3_errors.STREAM_ERRORS as e:
                self._drop_body()
                failures += 1
                if failures > attempts:
                    self._gave_up = self._store.redact(
                        '%s: the download broke off at byte %d %d times '
                        '(last error: %s)'
                        % (self._what(), self._offset, failures, e))
                    raise exception.TransientStoreError(
                        reason=self._gave_up)
                continue
            self._offset += len(data)
            return data

    def read(self, size=-1):
        if self._size is not None and self._offset >= self._size:
            return b''
        if size is None or size < 0:
            parts = []
            while True:
                data = self._read_some(DRAIN_STEP)
                if not data:
                    return b''.join(parts)
                parts.append(data)
        if size == 0:
            return b''
        return self._read_some(size)

    def close(self):
        self._drop_body()
