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

"""Encrypted backups through the POSIX driver, keys in castellan.

The key manager is castellan's own in-process one
(:mod:`cinder_chunked_ext.tests.key_manager`), loaded by castellan from
``[key_manager] backend`` as Cinder's would be.
"""

import base64
from concurrent import futures
import io
import json
import logging
import os
import threading
from unittest import mock

from castellan import key_manager
import ddt
import fixtures
from oslo_config import cfg

from cinder_chunked_ext.encryption import documents
from cinder_chunked_ext.engine import concurrency
from cinder_chunked_ext.engine import driver as chunked
from cinder_chunked_ext.engine import manifest
from cinder_chunked_ext import exception
from cinder_chunked_ext.store import sealed
from cinder_chunked_ext.tests import key_manager as test_key_manager
from cinder_chunked_ext.tests.unit import test_chunked_backup as base

CHUNK = base.CHUNK
SHA = base.SHA
PATTERN = b'PLAINTEXT-MARKER-7f3a '
CODECS = ('none', 'zlib', 'gzip', 'bz2', 'zstd')


def marked_volume(chunks=5, tail=1000):
    """The mixed volume, with a known pattern in its text and zeros."""
    data = bytearray(base.mixed_volume(chunks=chunks, tail=tail))
    for offset in range(0, len(data) - len(PATTERN), 3 * CHUNK):
        data[offset:offset + len(PATTERN)] = PATTERN
    return bytes(data)


class EncryptedDriverTestCase(base.DriverTestCase):

    def setUp(self):
        super().setUp()
        cfg.CONF.register_opts(key_manager.key_manager_opts,
                               group='key_manager')
        self.conf.config(backend=test_key_manager.BACKEND,
                         group='key_manager')
        test_key_manager.SharedKeyManager.reset()
        self.addCleanup(test_key_manager.SharedKeyManager.reset)
        self.driver = self.make_driver(encryption='aes-256-gcm')

    def make_driver(self, encryption=None, **overrides):
        if encryption is not None:
            self.conf.config(encryption=encryption,
                             group=chunked.PIPELINE_GROUP)
        return super().make_driver(**overrides)

    def keys(self):
        return {key_id: secret.get_encoded() for key_id, secret in
                test_key_manager.SharedKeyManager.stored.items()}

    def envelope(self, backup, name=None):
        return json.loads(self.read_file(
            backup, name or manifest.metadata_name(backup.service_metadata)))

    def all_stored_bytes(self):
        out = []
        for root, _dirs, files in os.walk(self.repo):
            for name in files:
                with open(os.path.join(root, name), 'rb') as f:
                    out.append(f.read())
        return b''.join(out)


@ddt.ddt
class EncryptedBackupTestCase(EncryptedDriverTestCase):

    @ddt.data(*CODECS)
    def test_full_backup_restores_new_and_existing_identical(self, codec):
        driver = self.make_driver(backup_compression_algorithm=codec)
        data = marked_volume()
        backup = self.make_backup(data, driver=driver)
        self.assertEqual(data, self.restore_bytes(backup, len(data),
                                                  driver=driver)[:len(data)])
        self.assertEqual(data, self.restore_bytes(
            backup, len(data), volume_is_new=False, fill=b'\xaa',
            driver=driver)[:len(data)])

    @ddt.data(*CODECS)
    def test_repository_holds_no_plaintext_and_no_key(self, codec):
        driver = self.make_driver(backup_compression_algorithm=codec)
        data = marked_volume()
        backup = self.make_backup(data, driver=driver)
        stored = self.all_stored_bytes()
        self.assertNotIn(PATTERN, stored)
        # No block hash (of zeros or of anything) in plaintext either.
        for sha in base.sha256_list(data)[:20]:
            self.assertNotIn(sha.encode(), stored)
        keys = self.keys()
        self.assertEqual(1, len(keys))
        key = next(iter(keys.values()))
        for form in (key, key.hex().encode(), base64.b64encode(key)):
            self.assertNotIn(form, stored)
        envelope = self.envelope(backup)
        self.assertEqual(documents.VERSION, envelope['version'])
        self.assertEqual({'manager': 'castellan', 'id': next(iter(keys))},
                         envelope['key'])
        for name in self.files(backup):
            if sealed.is_data_object(backup.service_metadata, name):
                self.assertTrue(self.read_file(backup, name).startswith(
                    sealed.MAGIC))

    def test_plain_setting_writes_upstream_format(self):
        driver = self.make_driver(encryption='none',
                                  backup_compression_algorithm='none')
        backup = self.make_backup(marked_volume(), driver=driver)
        self.assertEqual('1.0.0', self.metadata(backup)['version'])
        self.assertEqual({}, self.keys())
        self.assertIn(PATTERN, self.all_stored_bytes())

    def test_no_key_material_in_logs_debug(self):
        logger = self.useFixture(fixtures.FakeLogger(level=logging.DEBUG))
        data = marked_volume()
        backup = self.make_backup(data)
        self.restore_bytes(backup, len(data))
        self.driver.delete_backup(backup)
        self.assertTrue(logger.output)
        for key in self.keys().values():
            self.assertNotIn(key.hex(), logger.output)
            self.assertNotIn(base64.b64encode(key).decode(), logger.output)

    def test_sparse_restore_writes_no_zero_region(self):
        data = marked_volume(chunks=3, tail=0)     # third chunk: zeros
        backup = self.make_backup(data)
        target = base.VolumeFile(io.BytesIO(bytes(len(data))))
        self.restore(backup, target)
        self.assertEqual(data, target.getvalue())
        self.assertFalse(target.written(2 * CHUNK, 3 * CHUNK))

    def test_zero_object_stored_small(self):
        data = bytes(CHUNK)
        backup = self.make_backup(data)
        name = manifest.object_name(backup.service_metadata, 1)
        self.assertLess(len(self.read_file(backup, name)), CHUNK // 8)


@ddt.ddt
class EncryptedChainTestCase(EncryptedDriverTestCase):

    def _edit(self, data, chunk):
        new = bytearray(data)
        start = chunk * CHUNK + SHA
        new[start:start + SHA] = base.random_bytes(SHA, seed=chunk + 50)
        return bytes(new)

    @ddt.data(*CODECS)
    def test_chain_full_and_incrementals_restore_each(self, codec):
        driver = self.make_driver(backup_compression_algorithm=codec)
        v1 = marked_volume()
        v2 = self._edit(v1, 1)
        v3 = self._edit(v2, 3)
        full = self.make_backup(v1, driver=driver)
        inc1 = self.make_backup(v2, parent=full, driver=driver)
        inc2 = self.make_backup(v3, parent=inc1, driver=driver)
        # Change detection still works: one changed block, one object.
        self.assertEqual(1, inc1.object_count)
        self.assertEqual(1, inc2.object_count)
        for backup, data in ((full, v1), (inc1, v2), (inc2, v3)):
            self.assertEqual(data, self.restore_bytes(
                backup, len(data), driver=driver)[:len(data)])
        self.assertEqual(3, len(self.keys()))
        self.assertNotIn(PATTERN, self.all_stored_bytes())

    def test_salts_drawn_once_per_driver_not_per_object(self):
        # A driver object seals its objects through one store, whose
        # salts' random part is drawn once: os.urandom per object is a
        # system call and a round trip of the GIL on a worker thread.
        driver = self.make_driver()
        self.assertIs(driver.sealed_store, driver.sealed_store)
        v1 = marked_volume()
        full = self.make_backup(v1, driver=driver)
        v2 = bytearray(v1)
        for number in range(12):
            start = number * 2 * SHA
            v2[start:start + SHA] = base.random_bytes(SHA, seed=number)
        with mock.patch.object(sealed, 'Salts',
                               wraps=sealed.Salts) as salts_made:
            inc = self.make_backup(bytes(v2), parent=full, driver=driver)
        self.assertEqual(12, inc.object_count)
        self.assertEqual(0, salts_made.call_count)
        salts = set()
        for name in self.files(inc) + self.files(full):
            if sealed.is_data_object(inc.service_metadata, name) or \
                    sealed.is_data_object(full.service_metadata, name):
                salts.add(sealed.HEADER.unpack(
                    self.read_file(inc if name.startswith(
                        inc.service_metadata) else full, name)
                    [:sealed.HEADER.size])[4])
        self.assertEqual(12 + full.object_count, len(salts))
        self.assertEqual(bytes(v2), self.restore_bytes(
            inc, len(v2), driver=driver)[:len(v2)])

    def test_documents_sealed_and_opened_on_worker_keys_asked_here(self):
        # Under eventlet a chain's sha256file (megabytes for a large
        # volume) would hold up every green thread while it is parsed,
        # decrypted and encrypted: that work goes to ``execute``'s worker,
        # the key manager is asked from the calling thread.
        pool = futures.ThreadPoolExecutor(1)
        self.addCleanup(pool.shutdown)
        here = threading.get_ident()
        threads = {}

        def note(what):
            threads.setdefault(what, set()).add(threading.get_ident())

        def execute(func, *args, **kwargs):
            return pool.submit(func, *args, **kwargs).result()
        self.useFixture(fixtures.MockPatchObject(
            concurrency, 'execute', side_effect=execute))
        for module, name in ((documents, 'parse_envelope'),
                             (documents, 'open_sealed'),
                             (documents, '_sealed_pieces'),
                             (test_key_manager.SharedKeyManager, 'get'),
                             (test_key_manager.SharedKeyManager, 'store')):
            real = getattr(module, name)

            def spy(*args, _real=real, _name=name, **kwargs):
                note(_name)
                result = _real(*args, **kwargs)
                if _name == '_sealed_pieces':
                    return (piece for piece in result
                            if note('sealing') is None)
                return result
            self.useFixture(fixtures.MockPatchObject(
                module, name, side_effect=spy, autospec=True))
        driver = self.make_driver()
        v1 = marked_volume()
        v2 = self._edit(v1, 2)
        full = self.make_backup(v1, driver=driver)
        inc = self.make_backup(v2, parent=full, driver=driver)
        self.assertEqual(v2, self.restore_bytes(
            inc, len(v2), driver=self.make_driver())[:len(v2)])
        worker = {pool._threads and next(iter(pool._threads)).ident}
        for what in ('parse_envelope', 'open_sealed', 'sealing'):
            self.assertEqual(worker, threads[what], what)
        self.assertEqual({here}, threads['get'] | threads['store'])

    @ddt.data(('none', 'aes-256-gcm'), ('aes-256-gcm', 'none'))
    @ddt.unpack
    def test_mixed_chain_restores_and_detects_changes(self, first, second):
        v1 = marked_volume()
        v2 = self._edit(v1, 2)
        full = self.make_backup(v1, driver=self.make_driver(
            encryption=first))
        inc = self.make_backup(v2, parent=full, driver=self.make_driver(
            encryption=second))
        self.assertEqual(1, inc.object_count)
        for backup, data in ((full, v1), (inc, v2)):
            self.assertEqual(data, self.restore_bytes(
                backup, len(data), driver=self.make_driver())[:len(data)])


class EncryptedRefusalTestCase(EncryptedDriverTestCase):

    def setUp(self):
        super().setUp()
        self.data = marked_volume()
        self.backup = self.make_backup(self.data)
        self.key_id = next(iter(self.keys()))

    def assertRefusedUntouched(self, error, volume_is_new=True):
        target = base.VolumeFile(io.BytesIO(b'\xaa' * len(self.data)))
        self.assertRaises(error, self.restore, self.backup, target,
                          volume_is_new, self.make_driver())
        self.assertEqual([], target.writes)
        return target

    def test_key_deleted_refused_volume_untouched(self):
        del test_key_manager.SharedKeyManager.stored[self.key_id]
        self.assertRefusedUntouched(exception.BackupKeyUnavailable)

    def test_wrong_key_refused_volume_untouched(self):
        secret = test_key_manager.SharedKeyManager.stored[self.key_id]
        secret._key = os.urandom(32)
        self.assertRefusedUntouched(exception.CorruptBackup)

    def test_key_manager_unreachable_refused_volume_untouched(self):
        test_key_manager.SharedKeyManager.unreachable = True
        self.assertRefusedUntouched(exception.BackupKeyUnavailable,
                                    volume_is_new=False)

    def test_no_key_manager_configured_refused(self):
        self.conf.config(backend='no-such-backend', group='key_manager')
        self.assertRefusedUntouched(exception.BackupKeyUnavailable)

    def test_tampered_object_refused_before_its_bytes_written(self):
        name = manifest.object_name(self.backup.service_metadata, 2)
        stored = bytearray(self.read_file(self.backup, name))
        stored[len(stored) // 2] ^= 0x04
        self.write_file(self.backup, name, bytes(stored))
        target = base.VolumeFile(io.BytesIO(b'\xaa' * len(self.data)))
        error = self.assertRaises(exception.ObjectAuthenticationFailed,
                                  self.restore, self.backup, target, False,
                                  self.make_driver())
        self.assertIn(name, str(error))
        self.assertFalse(target.written(CHUNK, 2 * CHUNK))
        self.assertEqual(stored, self.read_file(self.backup, name))

    def test_swapped_objects_refused(self):
        one = manifest.object_name(self.backup.service_metadata, 1)
        two = manifest.object_name(self.backup.service_metadata, 2)
        first, second = (self.read_file(self.backup, one),
                         self.read_file(self.backup, two))
        self.write_file(self.backup, one, second)
        self.write_file(self.backup, two, first)
        self.assertRefusedUntouched(exception.ObjectAuthenticationFailed)

    def test_object_replayed_from_other_backup_refused(self):
        other = self.make_backup(self.data)
        name = manifest.object_name(self.backup.service_metadata, 1)
        self.write_file(self.backup, name, self.read_file(
            other, manifest.object_name(other.service_metadata, 1)))
        self.assertRefusedUntouched(exception.ObjectAuthenticationFailed)

    def test_truncated_object_refused(self):
        name = manifest.object_name(self.backup.service_metadata, 1)
        self.write_file(self.backup, name,
                        self.read_file(self.backup, name)[:-1])
        self.assertRefusedNaming(name, 0, CHUNK)

    # The metadata is authenticated, so changing it needs the backup's
    # key; the objects' associated data still refuses an entry that does
    # not match its object (a bug, or someone holding the key), before a
    # byte of the object reaches the volume.

    def edit_metadata(self, edit):
        """Open the backup's metadata, ``edit`` it, seal it again."""
        name = manifest.metadata_name(self.backup.service_metadata)
        raw = self.read_file(self.backup, name)
        key = self.keys()[self.key_id]
        doc = json.loads(documents.open_sealed(raw, name, self.backup.id,
                                               lambda _ref: key))
        entries = {next(iter(entry)): next(iter(entry.values()))
                   for entry in doc['objects']}
        edit(entries)
        self.write_file(self.backup, name, b''.join(documents.seal(
            key, name, self.backup.id, documents.key_reference(raw),
            [json.dumps(doc).encode()])))

    def assertRefusedNaming(self, name, start, end):
        """One error naming ``name``; nothing written to ``[start, end)``.

        (A restore writes objects in order: those before the refused one
        are on the volume already.)
        """
        target = base.VolumeFile(io.BytesIO(b'\xaa' * len(self.data)))
        error = self.assertRaises(exception.ObjectAuthenticationFailed,
                                  self.restore, self.backup, target, True,
                                  self.make_driver())
        self.assertIn(name, str(error))
        self.assertFalse(target.written(start, end))
        return target

    def test_objects_swapped_in_metadata_refused(self):
        # Two objects of the same length, each recorded (MD5 and all) at
        # the other's offset: the restore would write them swapped.
        one = manifest.object_name(self.backup.service_metadata, 1)
        two = manifest.object_name(self.backup.service_metadata, 2)

        def swap(entries):
            self.assertEqual(entries[one]['length'], entries[two]['length'])
            entries[one]['offset'], entries[two]['offset'] = (
                entries[two]['offset'], entries[one]['offset'])
        self.edit_metadata(swap)
        target = self.assertRefusedNaming(one, 0, 2 * CHUNK)
        self.assertEqual([], target.writes)

    def test_metadata_offset_edited_refused(self):
        last = manifest.object_name(self.backup.service_metadata, 6)

        def move(entries):
            # Still inside the volume and after the other objects.
            entries[last]['offset'] += 4096
        self.edit_metadata(move)
        self.assertRefusedNaming(last, 5 * CHUNK, len(self.data) + 4096)

    def test_metadata_length_edited_refused(self):
        name = manifest.object_name(self.backup.service_metadata, 1)

        def shorten(entries):
            entries[name]['length'] -= SHA
        self.edit_metadata(shorten)
        self.assertRefusedNaming(name, 0, CHUNK)

    def test_metadata_length_edited_refused_without_checksums(self):
        # Unverified restores stream each object to the volume: only the
        # associated data refuses it before its first byte is written.
        self.conf.config(verify_checksums_on_restore=False,
                         group=chunked.PIPELINE_GROUP)
        name = manifest.object_name(self.backup.service_metadata, 1)

        def shorten(entries):
            entries[name]['length'] -= SHA
        self.edit_metadata(shorten)
        target = self.assertRefusedNaming(name, 0, CHUNK)
        self.assertEqual([], target.writes)

    def test_tampered_metadata_refused(self):
        envelope = self.envelope(self.backup)
        sealed_doc = bytearray(base64.b64decode(envelope['sealed']))
        sealed_doc[5] ^= 0x01
        envelope['sealed'] = base64.b64encode(sealed_doc).decode()
        self.write_metadata(self.backup, envelope)
        self.assertRefusedUntouched(exception.CorruptBackup)

    def test_metadata_naming_no_key_refused(self):
        envelope = self.envelope(self.backup)
        del envelope['key']
        self.write_metadata(self.backup, envelope)
        self.assertRefusedUntouched(exception.CorruptBackup)

    def test_metadata_of_other_backup_refused(self):
        other = self.make_backup(self.data)
        self.write_metadata(self.backup, self.envelope(other))
        self.assertRefusedUntouched(exception.CorruptBackup)

    def test_backup_left_as_it_was_after_refusal(self):
        before = {name: self.read_file(self.backup, name)
                  for name in self.files(self.backup)}
        test_key_manager.SharedKeyManager.unreachable = True
        self.assertRefusedUntouched(exception.BackupKeyUnavailable)
        test_key_manager.SharedKeyManager.unreachable = False
        self.assertEqual(before, {name: self.read_file(self.backup, name)
                                  for name in self.files(self.backup)})
        self.assertEqual(self.data, self.restore_bytes(
            self.backup, len(self.data),
            driver=self.make_driver())[:len(self.data)])

    def test_key_manager_unreachable_backup_refused_nothing_written(self):
        test_key_manager.SharedKeyManager.unreachable = True
        backup = self.env.new_backup(1)
        self.assertRaises(exception.BackupKeyUnavailable,
                          self.make_driver().backup, backup,
                          io.BytesIO(self.data))
        self.assertIsNone(backup.service_metadata)


class EncryptedDeleteTestCase(EncryptedDriverTestCase):

    def test_delete_backup_deletes_its_key(self):
        first = self.make_backup(marked_volume())
        second = self.make_backup(marked_volume())
        self.assertEqual(2, len(self.keys()))
        key_of_second = self.envelope(second)['key']['id']
        self.make_driver().delete_backup(first)
        self.assertEqual([key_of_second], list(self.keys()))
        self.assertEqual([], self.files(first))

    def test_delete_key_already_gone_still_deletes_objects(self):
        backup = self.make_backup(marked_volume())
        test_key_manager.SharedKeyManager.reset()
        self.make_driver().delete_backup(backup)
        self.assertEqual([], self.files(backup))

    def test_delete_key_manager_unreachable_keeps_objects(self):
        backup = self.make_backup(marked_volume())
        names = self.files(backup)
        test_key_manager.SharedKeyManager.unreachable = True
        self.assertRaises(exception.BackupKeyUnavailable,
                          self.make_driver().delete_backup, backup)
        self.assertEqual(names, self.files(backup))

    def test_failed_backup_deletes_its_key(self):
        backup = self.env.new_backup(1)

        class Broken(io.BytesIO):
            def read(self, *args):
                raise OSError('read error')

        self.assertRaises(OSError, self.driver.backup, backup,
                          Broken(marked_volume()))
        self.assertEqual({}, self.keys())

    def test_cancelled_backup_deletes_its_key(self):
        backup = self.env.new_backup(1)
        self.env.status_override[backup.id] = 'deleting'
        self.driver.backup(backup, io.BytesIO(marked_volume()))
        self.assertEqual({}, self.keys())

    def test_delete_record_naming_other_backups_prefix_keeps_its_key(self):
        victim = self.make_backup(marked_volume())
        forged = self.env.new_backup(1, container=victim.container,
                                     service_metadata=victim.service_metadata)
        self.assertRaises(exception.UnsafePrefix,
                          self.make_driver().delete_backup, forged)
        self.assertEqual([self.envelope(victim)['key']['id']],
                         list(self.keys()))
        self.assertIn(victim.service_metadata + '_metadata',
                      self.files(victim))
        self.assertEqual(marked_volume(), self.restore_bytes(
            victim, len(marked_volume()),
            driver=self.make_driver())[:len(marked_volume())])
