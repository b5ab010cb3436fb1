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

"""Progress notifications: ours against upstream's, on the same volume.

Both POSIX drivers back the same sparse volume up through their Cinder
interface (``driver.backup`` on real records, as the manager calls it),
on Cinder's test base, whose fake notifier keeps every message that
``volume_utils.notify_about_backup_usage`` sends.  The
``backup.createprogress`` messages of each are counted and sized (the
JSON of their payloads).

Issue 17 measured a 16 GiB sparse volume with the default options:
upstream sent 2 notifications (3.5 KB), ours 136 (21 MB), each listing
every object so far, and ours has 64 times more objects (16 MiB objects
against upstream's 2 GB chunks).  The volume here keeps those ratios at
1/64 of the size, so that upstream's chunk (read whole into memory)
stays small: 256 MiB, chunks of 954 hash blocks of 32 KiB (upstream's
default 1999994880 bytes / 64, in whole blocks), full-backup objects of
256 KiB (16 MiB / 64): 9 chunks, 1031 objects of ours.
"""

import json

import ddt
from testtools import content

from cinder_chunked_ext.engine import driver as chunked
from cinder_chunked_ext.engine import notifications
from cinder_chunked_ext.tests.compat import base
from cinder_chunked_ext.tests.compat import test_posix_compat as posix

KiB = base.KiB
MiB = base.MiB
SHA = 32 * KiB
SCALE = 64
CHUNK = 1999994880 // SCALE // SHA * SHA
OBJECT = 16 * MiB // SCALE
SIZE = 16 * 1024 * MiB // SCALE
# Data in the sparse volume: (offset, kind, length); holes elsewhere.
DATA = ((0, 'r', 2 * MiB), (40 * MiB, 't', 3 * MiB),
        (SIZE - 5 * MiB, 'r', MiB))
# Ours may send one notification more than upstream; each of ours is
# bounded, whatever the number of objects.
MAX_PAYLOAD = 16 * KiB


def _payload_bytes(message):
    return len(json.dumps(message['payload'], default=str))


@ddt.ddt
class ProgressNotificationsTestCase(posix.PosixCompatTestCase):
    """Same volume, both drivers: how many messages, how large."""

    block = SHA
    chunk = CHUNK

    def setUp(self):
        super().setUp()
        # Cinder's defaults for what notifications depend on.
        self.conf.config(backup_enable_progress_timer=True,
                         backup_timer_interval=120)
        self.conf.config(full_backup_object_bytes=OBJECT,
                         group=chunked.PIPELINE_GROUP)

    def write_volume(self, name, data):
        """A sparse file: ``DATA`` written, holes elsewhere."""
        path = self.volume_path(name)
        with open(path, 'wb') as f:
            for offset, _kind, length in DATA:
                f.seek(offset)
                f.write(data[offset:offset + length])
            f.truncate(SIZE)
        return path

    def volume_bytes(self):
        data = bytearray(SIZE)
        for n, (offset, kind, length) in enumerate(DATA):
            data[offset:offset + length] = base.volume_data(
                kind * (length // SHA), SHA, n)
        return bytes(data)

    def progress(self, which, data):
        """``(messages, backup)`` of one backup by ``which``."""
        self.notifier.reset()
        backup = self.back_up(which, data)
        messages = [m for m in self.notifier.notifications
                    if m['event_type'] == 'backup.createprogress']
        return messages, backup

    @ddt.data(10, 2)
    def test_sparse_volume_notifications_bounded_like_upstream(
            self, per_notification):
        self.conf.config(
            backup_object_number_per_notification=per_notification)
        data = self.volume_bytes()
        theirs, their_backup = self.progress(posix.UPSTREAM, data)
        ours, our_backup = self.progress(posix.OURS, data)

        figures = {}
        for who, messages, backup in (('upstream', theirs, their_backup),
                                      ('ours', ours, our_backup)):
            sizes = [_payload_bytes(m) for m in messages]
            figures[who] = {'objects': backup.object_count,
                            'notifications': len(messages),
                            'total_payload_bytes': sum(sizes),
                            'max_payload_bytes': max(sizes, default=0)}
        self.addDetailUniqueName('notifications', content.text_content(
            '16 GiB volume / %d, a notification every %d chunks: %s'
            % (SCALE, per_notification, json.dumps(figures,
                                                   sort_keys=True))))

        self.assertEqual(-(-SIZE // CHUNK), their_backup.object_count)
        # Objects of 256 KiB, and a shorter one at the end of each chunk.
        self.assertGreaterEqual(our_backup.object_count, SIZE // OBJECT)
        self.assertLessEqual(len(ours), len(theirs) + 1, figures)
        self.assertGreater(len(ours), 0)
        self.assertEqual(100, ours[-1]['payload']['backup_percent'])
        self.assertLess(figures['ours']['max_payload_bytes'], MAX_PAYLOAD,
                        figures)
        for message in ours:
            payload = message['payload']
            self.assertLessEqual(len(payload['list']),
                                 notifications.LISTED_OBJECTS)
            self.assertEqual(our_backup.service_metadata, payload['prefix'])
        self.assertEqual(our_backup.object_count,
                         ours[-1]['payload']['object_count'])
