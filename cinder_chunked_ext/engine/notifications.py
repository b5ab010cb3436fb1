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

"""Progress notifications of a running backup.

``backup.createprogress`` goes out as upstream sends it: each time the
backup has gone through ``backup_object_number_per_notification`` more
chunks of the volume (upstream stores one object per chunk, so the
option counts chunks there), on a timer of ``backup_timer_interval``
seconds, and at 100%.  Counting in volume bytes keeps upstream's
cadence although our objects are smaller than a chunk.

Upstream puts the whole object list of the backup in every message,
which grows with the volume; here ``list`` holds at most
``LISTED_OBJECTS`` entries, the objects written since the previous
notification (the newest of them), and ``object_count`` the number of
objects written so far.  Every message is bounded.

The timer is checked as data flows rather than run on a thread or a
looping call of its own: the notification reads the run's object list,
which only the backup's own thread changes, and the check behaves the
same under eventlet and native threads.
"""

import time

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

#: The most object entries one notification lists.
LISTED_OBJECTS = 32


class ProgressNotifier(object):
    """Sends a backup's progress: on a timer, every N chunks, at 100%."""

    def __init__(self, env, job, settings, enabled_timer, chunk_bytes):
        self._env = env
        self._job = job
        self._interval = settings.timer_interval
        self._every = max(1, settings.objects_per_notification *
                          max(1, chunk_bytes))
        self._next = self._every
        # As upstream's looping call: an interval of 0 fires at once.
        self._timer = enabled_timer and self._interval >= 0
        self._last = time.monotonic()
        self._listed = 0        # objects already reported

    def _new_entries(self):
        objects = self._job.metadata.objects
        first = max(self._listed, len(objects) - LISTED_OBJECTS)
        self._listed = len(objects)
        return [o.to_json_entry() for o in objects[first:]]

    def _send(self, percent):
        job = self._job
        info = {'id': job.next_number,
                'list': self._new_entries(),
                'object_count': len(job.metadata.objects),
                'prefix': job.prefix,
                'volume_meta': job.metadata.volume_meta,
                'backup_percent': percent}
        if job.extra_metadata is not None:
            info['extra_metadata'] = job.extra_metadata
        try:
            self._env.notify_progress(job.backup, info)
        except Exception:  # noqa - a notifier must not fail a backup
            LOG.warning('Could not send the progress notification of '
                        'backup %s.', job.backup.id, exc_info=True)
        self._last = time.monotonic()

    def percent(self):
        size = self._job.volume_size_bytes
        if size <= 0:
            return 0
        return min(100, self._job.bytes_done * 100 / size)

    def due(self):
        """True when the timer's interval has passed."""
        return (self._timer and
                time.monotonic() - self._last >= self._interval)

    def _bytes_due(self):
        """True when the backup went through N more chunks' worth."""
        done = self._job.bytes_done
        if done < self._next:
            return False
        self._next = (done // self._every + 1) * self._every
        return True

    def tick(self):
        """Send a notification when one is due: by bytes or by time."""
        if self._bytes_due() or self.due():
            self._send(self.percent())

    def object_written(self):
        """An object is stored (its bytes counted in ``bytes_done``)."""
        if self._bytes_due():
            self._send(self.percent())

    def finished(self):
        self._send(100)
