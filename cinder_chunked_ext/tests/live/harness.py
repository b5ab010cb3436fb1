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

"""What the live scenarios use: the API client, waits, volume contents,
the stores' listings, the broker's notifications, the service logs and
the figures recorded for the report."""

import json
import os
import random
import re
import sys
import time

from cinderclient import client as cinder_client
from cinderclient.contrib import noauth
from cinderclient import exceptions as client_exc
from keystoneauth1 import session as ks_session

MiB = 1024 * 1024
GiB = 1024 * MiB
VOLUME_GB = 1
DATA_MIB = 96          # mixed content written at the start of a volume
BIG_MIB = 384          # incompressible data: a backup that runs a while
OBJECT_SIZE = 16 * MiB  # the drivers' object (chunk) size in these tests
TIMEOUT = 180


class NoAuthPlugin(noauth.CinderNoAuthPlugin):
    """cinderclient's noauth plugin for ``auth_strategy = noauth``.

    That strategy's URLs carry no project id (cinderclient's plugin
    appends one, for ``noauth_include_project_id``).
    """

    def get_endpoint(self, session, **kwargs):
        return self._endpoint


def make_client(api_port):
    auth = NoAuthPlugin('admin', 'admin',
                        endpoint='http://127.0.0.1:%d/v3' % api_port)
    return cinder_client.Client('3.64',
                                session=ks_session.Session(auth=auth))


def _retry_locked(call, *args, **kwargs):
    """``call``, again after a 500: SQLite's "database is locked".

    SQLite answers a write that would have to wait for another
    process's transaction with an immediate error in some cases (a read
    transaction upgraded to a write); the API turns it into a 500.  The
    failed request was rolled back, so it can be sent again.
    """
    for attempt in range(4):
        try:
            return call(*args, **kwargs)
        except client_exc.ClientException as e:
            if getattr(e, 'code', None) != 500 or attempt == 3:
                raise
            time.sleep(0.5 * (attempt + 1))


class Api(object):
    """Waits on the API's resources."""

    def __init__(self, api_port):
        self.client = make_client(api_port)

    def wait_api(self, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            try:
                services = self.client.services.list()
                up = {s.binary for s in services if s.state == 'up'}
                # The scheduler places volumes once it has the
                # volume service's pool.
                if ({'cinder-scheduler', 'cinder-volume',
                     'cinder-backup'} <= up and self.client.pools.list()):
                    return
            except Exception:   # the API is not listening yet
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise AssertionError('services not up: %s' % services)
            time.sleep(0.5)

    def wait_volume(self, volume_id, status='available', timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            volume = self.client.volumes.get(volume_id)
            if volume.status == status:
                return volume
            if volume.status == 'error' or time.monotonic() > deadline:
                raise AssertionError('volume %s is %s, not %s'
                                     % (volume_id, volume.status, status))
            time.sleep(0.3)

    def wait_backup(self, backup_id, status='available', timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            backup = self.client.backups.get(backup_id)
            if backup.status == status:
                return backup
            if (backup.status == 'error' and status != 'error'
                    or time.monotonic() > deadline):
                raise AssertionError(
                    'backup %s is %s (%s), not %s'
                    % (backup_id, backup.status,
                       getattr(backup, 'fail_reason', None), status))
            time.sleep(0.3)

    def wait_backup_gone(self, backup_id, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            try:
                backup = self.client.backups.get(backup_id)
            except client_exc.NotFound:
                return
            if (backup.status == 'error_deleting'
                    or time.monotonic() > deadline):
                raise AssertionError('backup %s is %s, not deleted'
                                     % (backup_id, backup.status))
            time.sleep(0.3)

    def create_volume(self, name):
        volume = _retry_locked(self.client.volumes.create, VOLUME_GB,
                               name=name)
        return self.wait_volume(volume.id)

    def backup(self, volume_id, incremental=False, wait=True, name=None):
        backup = _retry_locked(self.client.backups.create, volume_id,
                               incremental=incremental, name=name)
        if wait:
            return self.wait_backup(backup.id)
        return backup

    def restore(self, backup_id, volume_id=None):
        """Restore (into a new volume without ``volume_id``); its id."""
        restore = _retry_locked(self.client.restores.restore, backup_id,
                                volume_id=volume_id)
        self.wait_backup(backup_id)
        self.wait_volume(restore.volume_id)
        return restore.volume_id

    def backup_service_up(self):
        return [s.state for s in self.client.services.list(
            binary='cinder-backup')] == ['up']


# -- volume contents ---------------------------------------------------------

def _piece(kind, rng, size):
    if kind == 'text':
        line = b'cinder_chunked_ext live test line %08d\n'
        text = b''.join(line % rng.randrange(10 ** 8)
                        for _ in range(size // len(line % 0) + 1))
        return text[:size]
    if kind == 'random':
        return rng.randbytes(size)
    if kind == 'zeros':
        return bytes(size)
    raise ValueError(kind)


def write_mixed(paths, seed, data_mib=DATA_MIB):
    """Mixed content in the first ``data_mib`` MiB and the last MiB.

    Text, random bytes, written zeros and holes in turn, 1 MiB each,
    written alike into every file of ``paths`` (a volume and its
    reference copy).
    """
    rng = random.Random(seed)
    kinds = ('text', 'random', 'zeros', None)
    writes = []
    for n in range(data_mib):
        kind = kinds[rng.randrange(len(kinds))]
        if kind:
            writes.append((n * MiB, _piece(kind, rng, MiB)))
    writes.append((VOLUME_GB * GiB - MiB, _piece('random', rng, MiB)))
    _apply(paths, writes)


def change_some(paths, seed, data_mib=DATA_MIB, fraction=0.05):
    """Overwrite about ``fraction`` of the data region, 256 KiB at a time.

    A third of the pieces become zeros, so an incremental must also
    carry regions that went back to zero.
    """
    rng = random.Random(seed)
    piece = 256 * 1024
    count = int(data_mib * MiB * fraction) // piece
    writes = []
    for n in range(count):
        offset = rng.randrange(data_mib * MiB // piece) * piece
        kind = 'zeros' if n % 3 == 2 else 'random'
        writes.append((offset, _piece(kind, rng, piece)))
    _apply(paths, writes)


def write_big(paths, seed, mib=BIG_MIB):
    """Incompressible data: a backup of it takes a while."""
    rng = random.Random(seed)
    _apply(paths, [(n * 4 * MiB, rng.randbytes(4 * MiB))
                   for n in range(mib // 4)])


def _apply(paths, writes):
    for path in paths:
        with open(path, 'r+b' if os.path.exists(path) else 'wb') as f:
            for offset, data in writes:
                f.seek(offset)
                f.write(data)
            if os.fstat(f.fileno()).st_size < VOLUME_GB * GiB:
                f.truncate(VOLUME_GB * GiB)
            f.flush()
            os.fsync(f.fileno())


def same_content(path_a, path_b, size=VOLUME_GB * GiB):
    """Do the two files hold the same bytes (a short file reads zeros)?"""
    piece = 4 * MiB
    with open(path_a, 'rb') as a, open(path_b, 'rb') as b:
        for offset in range(0, size, piece):
            data_a = a.read(piece)
            data_b = b.read(piece)
            if data_a.ljust(piece, b'\0') != data_b.ljust(piece, b'\0'):
                return False, offset
    return True, None


# -- the stores --------------------------------------------------------------

class PosixStore(object):
    def __init__(self, path):
        self.path = path

    def names(self, backup_id):
        found = []
        for root, _dirs, files in os.walk(self.path):
            found.extend(os.path.join(root, name) for name in files
                         if backup_id in name)
        return sorted(found)


class S3Store(object):
    def __init__(self, server, bucket):
        self.client = server.client()
        self.bucket = bucket

    def names(self, backup_id):
        found = []
        paginator = self.client.get_paginator('list_objects_v2')
        try:
            for page in paginator.paginate(Bucket=self.bucket):
                found.extend(o['Key'] for o in page.get('Contents', ())
                             if backup_id in o['Key'])
        except self.client.exceptions.NoSuchBucket:
            pass
        return sorted(found)


class SwiftStore(object):
    def __init__(self, server):
        self.connection = server.connection()

    def names(self, backup_id):
        from swiftclient import exceptions as swift_exc
        found = []
        _headers, containers = self.connection.get_account(full_listing=True)
        for container in containers:
            try:
                _headers, objects = self.connection.get_container(
                    container['name'], full_listing=True)
            except swift_exc.ClientException:
                continue
            found.extend(o['name'] for o in objects
                         if backup_id in o['name'])
        return sorted(found)


def wait_for_objects(store, backup_id, count=1, timeout=60):
    """Until the store holds ``count`` objects of the backup."""
    deadline = time.monotonic() + timeout
    while len(store.names(backup_id)) < count:
        if time.monotonic() > deadline:
            raise AssertionError('no objects of %s appeared' % backup_id)
        time.sleep(0.05)


def wait_for_no_objects(store, backup_id, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        names = store.names(backup_id)
        if not names:
            return
        if time.monotonic() > deadline:
            raise AssertionError('objects of %s left: %s'
                                 % (backup_id, names[:10]))
        time.sleep(0.2)


# -- notifications -----------------------------------------------------------

class Notifications(object):
    """Reads ``notifications.info`` from the broker (oslo.messaging 2.0)."""

    QUEUE = 'notifications.info'

    def __init__(self, transport_url):
        import kombu
        self.connection = kombu.Connection(
            transport_url.replace('rabbit://', 'amqp://'))

    def drain(self):
        """Every message queued now: ``[(event_type, payload, size)]``."""
        from amqp import exceptions as amqp_exc
        found = []
        channel = self.connection.channel()
        try:
            try:
                channel.queue_declare(self.QUEUE, passive=True)
            except amqp_exc.NotFound:
                return found
            while True:
                message = channel.basic_get(self.QUEUE, no_ack=True)
                if message is None:
                    return found
                body = message.body
                envelope = json.loads(body)
                inner = json.loads(envelope.get('oslo.message', 'null')
                                   or 'null') or envelope
                found.append((inner.get('event_type'),
                              inner.get('payload') or {}, len(body)))
        finally:
            channel.close()

    def wait_for_backup(self, backup_id, event='backup.create.end',
                        timeout=60):
        """The backup's events by type, once ``event`` has arrived.

        The manager sends ``backup.create.end`` after the status turned
        available, so it may still be on its way when the test sees it.
        """
        messages = []
        deadline = time.monotonic() + timeout
        while True:
            messages.extend(self.drain())
            counts = self.for_backup(messages, backup_id)
            if event in counts or time.monotonic() > deadline:
                return counts
            time.sleep(0.2)

    def for_backup(self, messages, backup_id):
        counts = {}
        for event_type, payload, size in messages:
            if payload.get('backup_id') != backup_id:
                continue
            count, total = counts.get(event_type, (0, 0))
            counts[event_type] = (count + 1, total + size)
        return counts

    def close(self):
        self.connection.release()


# -- logs --------------------------------------------------------------------

_LINE = re.compile(r'^\S+ \S+ \d+ (?P<level>[A-Z]+) (?P<logger>\S+) ')


class LogReader(object):
    """Reads what a service logged since the last call."""

    def __init__(self, path):
        self.path = path
        self.offset = 0

    def read_new(self):
        try:
            with open(self.path, 'rb') as f:
                f.seek(self.offset)
                data = f.read()
                self.offset = f.tell()
        except FileNotFoundError:
            return ''
        return data.decode('utf-8', 'replace')

    @staticmethod
    def problems(text, secrets=()):
        """ERRORs and tracebacks of our code; secrets anywhere."""
        found = []
        entries = []
        for line in text.splitlines():
            if _LINE.match(line) or not entries:
                entries.append([line])
            else:
                entries[-1].append(line)
        for entry in entries:
            head = _LINE.match(entry[0])
            body = '\n'.join(entry)
            ours = 'cinder_chunked_ext' in body
            if head and head.group('level') in ('ERROR', 'CRITICAL') and ours:
                found.append(body)
            elif 'Traceback' in body and ours:
                found.append(body)
        for secret in secrets:
            if secret and secret in text:
                found.append('a secret (%s...) is in the log' % secret[:3])
        return found


# -- figures -----------------------------------------------------------------

class Figures(object):
    """Timings, peak RSS and notification counts, for the report."""

    def __init__(self, path):
        self.path = path
        self.rows = []

    def add(self, scenario, **values):
        row = dict(scenario=scenario, **values)
        self.rows.append(row)
        self.save()

    def save(self):
        with open(self.path, 'w') as f:
            json.dump(self.rows, f, indent=1, sort_keys=True)


def report(path):
    """Print the figures file as a table."""
    with open(path) as f:
        rows = json.load(f)
    for row in rows:
        scenario = row.pop('scenario')
        print('%-34s %s' % (scenario, ' '.join(
            '%s=%s' % (k, v) for k, v in sorted(row.items()))))


if __name__ == '__main__':
    report(sys.argv[1] if len(sys.argv) > 1 else '.live/figures.json')
