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

"""Progress notifications at upstream's cadence, each of a bounded size.

Upstream stores one object per chunk and notifies every
``backup_object_number_per_notification`` chunks, listing every object
so far.  Our objects are smaller than a chunk (16 MiB on a file
system), so counting objects sent a notification every 160 MiB, each
listing the whole backup: a quadratic amount of JSON on the backup's
thread.  The cadence is counted in volume bytes, and a message lists at
most ``LISTED_OBJECTS`` objects.
"""

import json

from cinder_chunked_ext.engine import notifications
from cinder_chunked_ext.tests.unit import test_chunked_backup as base

CHUNKS = 25


class CadenceTestCase(base.DriverTestCase):

    def _notifications(self, backup):
        return [info for bid, info in self.env.notifications
                if bid == backup.id]

    def _backup_many_objects(self):
        # Sixteen objects a chunk: 400 objects in all.
        self.conf.config(full_backup_object_bytes=base.SHA,
                         group='chunked_backup')
        driver = self.make_driver(backup_object_number_per_notification=10,
                                  backup_timer_interval=3600)
        data = base.text_bytes(CHUNKS * base.CHUNK)
        backup = self.make_backup(data, driver=driver)
        self.assertEqual(CHUNKS * base.CHUNK // base.SHA,
                         len(self.metadata(backup)['objects']))
        return backup

    def test_progress_every_ten_chunks_whatever_the_object_count(self):
        backup = self._backup_many_objects()
        percents = [info['backup_percent']
                    for info in self._notifications(backup)]
        size = self.env.backups[backup.id].size * base.GiB
        self.assertEqual([10 * base.CHUNK * 100 / size,
                          20 * base.CHUNK * 100 / size, 100], percents)

    def test_progress_message_lists_bounded_objects_counted(self):
        backup = self._backup_many_objects()
        sent = self._notifications(backup)
        for info in sent:
            self.assertLessEqual(len(info['list']),
                                 notifications.LISTED_OBJECTS)
            self.assertLess(len(json.dumps(info)), 16 * 1024)
        self.assertEqual([160, 320, 400],
                         [info['object_count'] for info in sent])
        # The last message lists the newest objects, ending with the last.
        last = sent[-1]['list'][-1]
        self.assertEqual(self.metadata(backup)['objects'][-1], last)
