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

"""Upstream Cinder's S3 driver and ours read each other's backups.

Both drivers run against the same real S3 server (SeaweedFS on
127.0.0.1).  Upstream's driver runs its real data path; only what needs
Cinder's database or message bus is replaced: ``objects.Backup.get_by_id``
(parent lookups), ``db.volume_get`` (the volume size) and the progress
notifier.  Skipped when Cinder is not importable, unless
``CINDER_CHUNKED_REQUIRE_CINDER=1``, where that is a failure.
"""

import json
import os
import subprocess
import sys
from unittest import mock

import ddt
import fixtures
import testtools
from testtools import content

from cinder_chunked_ext.engine import driver as chunked
from cinder_chunked_ext.tests.compat import base
from cinder_chunked_ext.tests.functional import test_s3_driver as functional

try:
    from cinder.backup.drivers import s3 as upstream_s3
    from cinder import objects as cinder_objects
    from cinder.volume import volume_utils
except ImportError as e:  # pragma: no cover - depends on the environment
    upstream_s3 = None
    IMPORT_ERROR = str(e)
else:
    cinder_objects.register_all()
    IMPORT_ERROR = None

BLOCK = functional.BLOCK
ALGORITHMS = ('zlib', 'bz2', 'zstd', 'none')


def require_cinder(testcase):
    """Skip without Cinder; fail when the run requires it."""
    if upstream_s3 is not None:
        return
    message = 'cinder is not importable: %s' % IMPORT_ERROR
    if os.environ.get('CINDER_CHUNKED_REQUIRE_CINDER') == '1':
        testcase.fail(message)
    testcase.skipTest(message)


class CompatTestCase(functional.S3DriverTestCase):
    """Our driver (``self.driver()``) and upstream's (``self.upstream()``)."""

    def setUp(self):
        require_cinder(self)
        super().setUp()
        # Cinder's driver base disposes of the database engine when it
        # is built; an in-memory SQLite one is enough (never queried).
        self.conf.config(connection='sqlite://', group='database')
        # Plain http on loopback: no certificate to verify (and no
        # warning from upstream's driver about a missing CA bundle).
        self.conf.config(backup_s3_verify_ssl=False)
        get_by_id = mock.patch.object(
            cinder_objects.Backup, 'get_by_id',
            side_effect=lambda context, backup_id:
                self.env.get_backup(backup_id))
        self.get_by_id = get_by_id.start()
        self.addCleanup(get_by_id.stop)
        notify = mock.patch.object(volume_utils,
                                   'notify_about_backup_usage')
        self.notify = notify.start()
        self.addCleanup(notify.stop)

    def use_compression(self, algorithm):
        self.conf.config(backup_compression_algorithm=algorithm)

    def upstream(self):
        driver = upstream_s3.S3BackupDriver(self.context)
        volume_get = mock.patch.object(
            driver.db, 'volume_get',
            side_effect=lambda context, volume_id:
                {'id': volume_id,
                 'size': self.env.volume_size_gib(volume_id)})
        volume_get.start()
        self.addCleanup(volume_get.stop)
        real_backup = driver.backup

        def backup(backup, volume_file, backup_metadata=False):
            # Volume metadata lives in Cinder's database: not here.
            return real_backup(backup, volume_file,
                               backup_metadata=backup_metadata)
        driver.backup = backup
        return driver

    def volume_data(self):
        """Random, compressible and zero blocks, and a partial block."""
        return (os.urandom(3 * BLOCK) + b'compress me ' * 8192
                + bytes(5 * BLOCK) + os.urandom(2 * BLOCK) + b'tail')

    def both_restore(self, backup, data):
        self.assertEqual(data, self.restore(backup, len(data),
                                            driver=self.upstream()))
        self.assertEqual(data, self.restore(backup, len(data)))


@ddt.ddt
class CrossRestoreTestCase(CompatTestCase):

    @ddt.data(*ALGORITHMS)
    def test_upstream_backup_restores_with_ours(self, algorithm):
        self.use_compression(algorithm)
        data = self.volume_data()
        backup = self.backup(data, driver=self.upstream())
        self.assertEqual('volume_%s' % backup.volume_id,
                         backup.service_metadata.split('/')[0])
        self.assertEqual(data, self.restore(backup, len(data)))

    @ddt.data(*ALGORITHMS)
    def test_our_backup_restores_with_upstream(self, algorithm):
        self.use_compression(algorithm)
        data = self.volume_data()
        backup = self.backup(data)
        self.assertEqual(data, self.restore(backup, len(data),
                                            driver=self.upstream()))

    @ddt.data(*ALGORITHMS)
    def test_mixed_chain_upstream_full_our_incremental(self, algorithm):
        self.use_compression(algorithm)
        data1 = self.volume_data()
        full = self.backup(data1, driver=self.upstream())
        data2 = functional.replace_block(data1, 1)
        data2 = functional.replace_block(data2, 4, bytes(BLOCK))
        incr = self.backup(data2, parent=full)
        self.both_restore(incr, data2)
        self.both_restore(full, data1)

    @ddt.data(*ALGORITHMS)
    def test_mixed_chain_our_full_upstream_incremental(self, algorithm):
        self.use_compression(algorithm)
        data1 = self.volume_data()
        full = self.backup(data1)
        data2 = functional.replace_block(data1, 9)
        incr = self.backup(data2, parent=full, driver=self.upstream())
        data3 = functional.replace_block(data2, 0)
        incr2 = self.backup(data3, parent=incr)
        self.both_restore(incr2, data3)
        self.both_restore(incr, data2)
        self.assertTrue(self.get_by_id.called)

    def test_delete_by_upstream_of_our_backup_leaves_nothing(self):
        backup = self.backup(self.volume_data())
        self.upstream().delete_backup(backup)
        self.assertEqual([], self.keys(backup.service_metadata))

    def test_delete_by_ours_of_upstream_backup_leaves_nothing(self):
        backup = self.backup(self.volume_data(), driver=self.upstream())
        self.driver().delete_backup(backup)
        self.assertEqual([], self.keys(backup.service_metadata))


@ddt.ddt
class OptionsTestCase(testtools.TestCase):
    """Both drivers in one process, imported in either order."""

    def setUp(self):
        super().setUp()
        require_cinder(self)

    @ddt.data(('cinder.backup.drivers.s3', 'cinder_chunked_ext.drivers.s3'),
              ('cinder_chunked_ext.drivers.s3', 'cinder.backup.drivers.s3'))
    def test_import_either_order_no_duplicate_option(self, modules):
        code = ('import importlib, warnings\n'
                'warnings.simplefilter("ignore")\n'
                'for name in %r:\n'
                '    importlib.import_module(name)\n'
                'from oslo_config import cfg\n'
                'print(cfg.CONF.backup_s3_store_bucket,'
                ' cfg.CONF.backup_s3_object_size)\n' % (modules,))
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.dirname(os.path.abspath(__file__)))))
        env['PYTHONPATH'] = os.pathsep.join(
            p for p in (root, env.get('PYTHONPATH')) if p)
        result = subprocess.run([sys.executable, '-c', code], env=env,
                                capture_output=True, text=True, timeout=120)
        self.assertEqual(0, result.returncode, result.stderr[-2000:])
        self.assertEqual('volumebackups 52428800', result.stdout.strip())


@ddt.ddt
class NewObjectShapesTestCase(CompatTestCase):
    """Objects of shapes ours writes since issue 17; upstream restores.

    * A streamed object (larger than a piece: S3 writers hold what they
      upload) decides at its first piece whether it is compressed, so a
      text start and a random rest give an object recorded as
      compressed whose stored form is larger than the data (upstream
      recorded ``none`` then).
    * An incremental stores a long changed run in objects of a piece.
    """

    @ddt.data('zlib', 'zstd')
    def test_compressed_object_larger_than_raw_restored_by_upstream(
            self, algorithm):
        self.use_compression(algorithm)
        self.conf.config(backup_s3_object_size=16 * base.MiB)
        data = base.larger_than_raw(16 * base.MiB)
        backup = self.backup(data)
        (key,) = self.data_keys(backup)
        meta = json.loads(self.client.get_object(
            Bucket=self.s3.bucket,
            Key=backup.service_metadata + '_metadata')['Body'].read())
        (fields,) = [f for entry in meta['objects'] for f in entry.values()]
        self.assertEqual((0, len(data), algorithm),
                         (fields['offset'], fields['length'],
                          fields['compression']))
        stored = self.client.head_object(Bucket=self.s3.bucket,
                                         Key=key)['ContentLength']
        self.assertGreater(stored, len(data))
        self.addDetailUniqueName('sizes', content.text_content(
            '%s: %d bytes stored for %d' % (algorithm, stored, len(data))))
        self.assertEqual(data, self.restore(backup, len(data),
                                            driver=self.upstream()))

    @ddt.data('zlib', 'zstd', 'none')
    def test_long_changed_run_piece_objects_restored_by_upstream(
            self, algorithm):
        self.use_compression(algorithm)
        self.useFixture(fixtures.MockPatchObject(chunked, 'PIECE_BYTES',
                                                 BLOCK))
        data1 = self.volume_data()
        full = self.backup(data1, driver=self.upstream())
        data2 = data1[:BLOCK] + os.urandom(9 * BLOCK) + data1[10 * BLOCK:]
        incr = self.backup(data2, parent=full)
        # Blocks 1 to 9 over three objects of 4 blocks: 9 objects of a
        # block (upstream would write 3).
        self.assertEqual(9, incr.object_count)
        self.assertEqual(data2, self.restore(incr, len(data2),
                                             driver=self.upstream()))
