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

"""What the tests against Cinder itself share.

Every test here needs Cinder importable.  Without it the tests skip,
unless ``CINDER_CHUNKED_REQUIRE_CINDER=1`` is set (the ``cinder`` tox
environment sets it): then a missing Cinder is a failure, so that a
broken environment cannot pass by skipping everything.

:class:`CompatTestCase` only needs Cinder's modules.
:class:`CinderDBTestCase` runs on Cinder's own unit-test base class: an
in-memory sqlite database with Cinder's schema, a fake notifier and a
fake message transport, the way Cinder's backup tests run.  It adds
helpers for real ``objects.Volume`` / ``objects.Backup`` records and for
volume files in a temporary directory.
"""

import os
import random

import fixtures
from oslo_config import cfg
from oslo_config import fixture as config_fixture
import testtools

# Registers the options of the POSIX driver the tests configure.
from cinder_chunked_ext.drivers import posix  # noqa: F401

REQUIRE_CINDER_ENV = 'CINDER_CHUNKED_REQUIRE_CINDER'

try:
    # Cinder's test package: importing it also applies Cinder's choice of
    # concurrency (eventlet monkey-patching unless
    # OS_CINDER_DISABLE_EVENTLET_PATCHING is set), as cinder-backup does.
    from cinder.tests.unit import test as cinder_test
except ImportError as e:  # pragma: no cover - depends on the environment
    cinder_test = None
    CINDER_IMPORT_ERROR = e
else:
    CINDER_IMPORT_ERROR = None

HAVE_CINDER = cinder_test is not None

CONF = cfg.CONF

KiB = 1024
MiB = 1024 * KiB

OURS_POSIX = 'cinder_chunked_ext.drivers.posix.PosixBackupDriver'
UPSTREAM_POSIX = 'cinder.backup.drivers.posix.PosixBackupDriver'


def cinder_required():
    """True when a missing Cinder must fail the tests, not skip them."""
    value = os.environ.get(REQUIRE_CINDER_ENV, '')
    return value.strip().lower() in ('1', 'true', 'yes', 'on')


def skip_or_fail_without_cinder(testcase):
    """Skip ``testcase`` without Cinder; fail instead when it is required."""
    if HAVE_CINDER:
        return
    reason = 'Cinder is not importable: %s' % CINDER_IMPORT_ERROR
    if cinder_required():
        testcase.fail('%s (%s=1 requires it)' % (reason, REQUIRE_CINDER_ENV))
    testcase.skipTest(reason)


class CompatTestCase(testtools.TestCase):
    """A test that needs Cinder's modules but not its database."""

    def setUp(self):
        skip_or_fail_without_cinder(self)
        super().setUp()
        self.conf = self.useFixture(config_fixture.Config(CONF))


_DBBase = cinder_test.TestCase if HAVE_CINDER else testtools.TestCase


class CinderDBTestCase(_DBBase):
    """A test on Cinder's own test base: real objects on a sqlite DB."""

    def setUp(self):
        skip_or_fail_without_cinder(self)
        super().setUp()
        from cinder import context
        self.conf = self.useFixture(config_fixture.Config(CONF))
        self.ctxt = context.get_admin_context()
        self.workdir = self.useFixture(fixtures.TempDir()).path
        self.repo = os.path.join(self.workdir, 'repo')
        os.mkdir(self.repo)
        self.conf.config(backup_posix_path=self.repo)

    # -- records -----------------------------------------------------------

    def create_volume(self, size_gib=1, status='available', **fields):
        """A real ``objects.Volume`` in Cinder's database."""
        from cinder import objects
        from cinder.tests.unit import fake_constants
        values = {'size': size_gib, 'status': status, 'host': 'testhost',
                  'user_id': fake_constants.USER_ID,
                  'project_id': fake_constants.PROJECT_ID,
                  'availability_zone': 'nova',
                  'attach_status': 'detached',
                  'display_name': 'compat volume',
                  'volume_type_id': self.vt['id']}
        values.update(fields)
        volume = objects.Volume(context=self.ctxt, **values)
        volume.create()
        return volume

    def create_backup(self, volume, parent=None, service=OURS_POSIX,
                      status='creating', container=None, **fields):
        """A real ``objects.Backup`` of ``volume`` (incremental on parent)."""
        from cinder import objects
        from cinder.tests.unit import fake_constants
        values = {'volume_id': volume.id, 'size': volume.size,
                  'status': status, 'container': container,
                  'parent_id': parent.id if parent is not None else None,
                  'service': service, 'host': 'testhost',
                  'user_id': fake_constants.USER_ID,
                  'project_id': fake_constants.PROJECT_ID,
                  'availability_zone': 'nova',
                  'display_name': 'compat backup',
                  'display_description': 'made by a compat test',
                  'object_count': 0, 'fail_reason': '', 'metadata': {}}
        values.update(fields)
        backup = objects.Backup(context=self.ctxt, **values)
        backup.create()
        return backup

    # -- volume files ------------------------------------------------------

    def volume_path(self, name):
        return os.path.join(self.workdir, name)

    def write_volume(self, name, data):
        path = self.volume_path(name)
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def new_volume_file(self, name, size):
        """A sparse file reading as ``size`` zero bytes: a new volume."""
        path = self.volume_path(name)
        with open(path, 'wb') as f:
            f.truncate(size)
        return path

    def existing_volume_file(self, name, size, seed=99):
        """A file of ``size`` bytes of noise: a volume that held data."""
        return self.write_volume(name, random.Random(seed).randbytes(size))

    def read_volume(self, path):
        with open(path, 'rb') as f:
            return f.read()

    def assertSameBytes(self, expected, actual, msg=''):
        """Equal bytes; on failure name the first differing offset."""
        if expected == actual:
            return
        first = next((i for i, (x, y) in enumerate(zip(expected, actual))
                      if x != y), min(len(expected), len(actual)))
        self.fail('%s: %d bytes expected, %d found, first difference at '
                  'byte %d' % (msg or 'data differ', len(expected),
                               len(actual), first))

    def repository_files(self):
        """Paths, relative to the repository, of every file in it."""
        found = []
        for top, _dirs, files in os.walk(self.repo):
            for name in files:
                found.append(os.path.relpath(os.path.join(top, name),
                                             self.repo))
        return sorted(found)


def volume_data(layout, block, seed):
    """Bytes described by ``layout``: a string of per-block kinds.

    ``r`` random (incompressible), ``t`` text-like (compressible),
    ``z`` zeros; each letter is one ``block`` of bytes.  Deterministic for
    a given seed.
    """
    rng = random.Random(seed)
    words = [b'volume', b'backup', b'chunk', b'restore', b'cinder',
             b'object', b'manifest', b'sha256', b'offset', b'length']
    pool = b' '.join(rng.choice(words) + b'%d' % rng.randrange(100)
                     for _ in range(32 * KiB))
    parts = []
    for kind in layout:
        if kind == 'r':
            parts.append(rng.randbytes(block))
        elif kind == 't':
            start = rng.randrange(len(pool) // 2)
            text = pool[start:] * (block // (len(pool) - start) + 1)
            parts.append(text[:block])
        elif kind == 'z':
            parts.append(bytes(block))
        else:
            raise ValueError('unknown block kind %r' % kind)
    return b''.join(parts)


def overwrite(data, offset, new):
    """``data`` with ``new`` written at ``offset`` (same length)."""
    if offset + len(new) > len(data):
        raise ValueError('overwrite beyond the end of the data')
    return data[:offset] + new + data[offset + len(new):]


def larger_than_raw(size, text_bytes=2 * KiB, seed=17):
    """``size`` bytes whose compressed form is a little larger than raw.

    A short run of text opens otherwise random data: the first 4 MiB
    piece of an object compresses (by a few hundred bytes), so a
    streamed object is stored compressed, while the framing that zlib's
    stored blocks and zstd's raw blocks add to the random rest of a
    16 MiB object costs more than that: the stored form is several
    hundred bytes larger than the data.  Upstream recorded such an
    object as ``none``; since issue 17 ours records the algorithm.
    """
    text = volume_data('t', text_bytes, seed)
    return text + random.Random(seed).randbytes(size - text_bytes)
