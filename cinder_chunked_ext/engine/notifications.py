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

``backup.createprogress`` goes out every N objects, on a timer, and at
100%, as upstream sends it.  The timer is checked as data flows rather
than run on a thread or a looping call of its own: the notification
reads the run's object list, which only the backup's own thread changes,
and the check behaves the same under eventlet and native threads.
"""

import time

from oslo_log import log as logging

LOG = logging.getLogger(__name__)


class ProgressNotifier(object):
    """Sends a backup's progress: on a timer, every N objects, at 100%."""

    def __init__(self, env, job, settings, enabled_timer):
        self._env = env
        self._job = job
        self._interval = settings.timer_interval
        self._every = settings.objects_per_notification
        # As upstream's looping call: an interval of 0 fires at once.
        self._timer = enabled_timer and self._interval >= 0
        self._last = time.monotonic()
        self._objects_since = 0
        # The objects' entries, converted once each: a notification every
        # few objects must not convert the whole list again.
        self._entries = []

    def _object_entries(self):
        objects = self._job.metadata.objects
        self._entries.extend(o.to_json_entry()
                             for o in objects[len(self._entries):])
        return list(self._entries)

    def _send(self, percent):
        job = self._job
        info = {'id': job.next_number,
                'list': self._object_entries(),
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

    def tick(self):
        """Send a notification when the timer's interval has passed."""
        if self.due():
            self._send(self.percent())

    def object_written(self):
        self._objects_since += 1
        if self._objects_since >= self._every:
            self._objects_since = 0
            self._send(self.percent())

    def finished(self):
        self._send(100)
