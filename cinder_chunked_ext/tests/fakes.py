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

"""Backup records and an environment in memory, for driver tests.

They play the part of Cinder's ``objects.Backup`` and database for the
engine, with the same fields and methods it uses.
"""

import contextlib
import datetime
import uuid


class FakeBackup(object):
    """A backup record with the fields and methods the engine uses."""

    FIELDS = ('id', 'volume_id', 'container', 'service_metadata',
              'parent_id', 'size', 'status', 'display_name',
              'display_description', 'created_at', 'object_count',
              'availability_zone')

    def __init__(self, env, **fields):
        self._env = env
        self.id = fields.pop('id', None) or str(uuid.uuid4())
        self.volume_id = fields.pop('volume_id', None) or str(uuid.uuid4())
        self.container = fields.pop('container', None)
        self.service_metadata = fields.pop('service_metadata', None)
        self.parent_id = fields.pop('parent_id', None)
        self.size = fields.pop('size', 1)
        self.status = fields.pop('status', 'creating')
        self.display_name = fields.pop('display_name', 'test backup')
        self.display_description = fields.pop('display_description', None)
        self.created_at = fields.pop(
            'created_at',
            datetime.datetime(2026, 1, 2, 3, 4, 5,
                              tzinfo=datetime.timezone.utc))
        self.object_count = fields.pop('object_count', 0)
        self.availability_zone = fields.pop('availability_zone', 'nova')
        if fields:
            raise TypeError('unknown fields %s' % sorted(fields))
        self.saves = 0

    def __getitem__(self, key):
        return getattr(self, key)

    def save(self):
        self.saves += 1
        self._env.saved[self.id] = {f: getattr(self, f) for f in self.FIELDS}

    def refresh(self):
        status = self._env.status_override.get(self.id)
        if status is not None:
            self.status = status

    @contextlib.contextmanager
    def as_read_deleted(self):
        yield self


class FakeEnvironment(object):
    """Records, volume sizes, notifications and volume metadata."""

    def __init__(self):
        self.backups = {}
        self.volume_sizes = {}
        self.notifications = []
        self.volume_metadata = {}
        self.saved = {}
        self.status_override = {}

    def new_backup(self, volume_size_gib=1, **fields):
        backup = FakeBackup(self, size=volume_size_gib, **fields)
        self.backups[backup.id] = backup
        self.volume_sizes[backup.volume_id] = volume_size_gib
        return backup

    def get_backup(self, backup_id):
        return self.backups[backup_id]

    def volume_size_gib(self, volume_id):
        return self.volume_sizes[volume_id]

    def notify_progress(self, backup, usage_info):
        self.notifications.append((backup.id, dict(usage_info)))

    def get_volume_metadata(self, volume_id):
        return self.volume_metadata.get(volume_id)

    def put_volume_metadata(self, volume_id, json_metadata):
        self.volume_metadata[volume_id] = json_metadata


class FakeContext(object):
    """A request context that carries its own environment."""

    def __init__(self, env=None):
        self.chunked_environment = env or FakeEnvironment()
