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

"""Backup records both drivers accept, kept in a JSON file between phases.

They stand in for Cinder's database, which the benchmark does not run:
each phase process loads the book, adds or reads a record, and saves it.
"""

import json
import os

from cinder_chunked_ext.tool import records

GiB = 1024 ** 3


class Record(records.DetachedRecord):
    """A backup record with the fields and methods the drivers use.

    Upstream's driver also resets an object's changes; the book, not the
    record, is saved between phases.
    """

    FIELDS = ('id', 'volume_id', 'container', 'service_metadata',
              'parent_id', 'size', 'status', 'display_name',
              'display_description', 'created_at', 'object_count',
              'availability_zone')

    def __init__(self, **fields):
        for name in self.FIELDS:
            setattr(self, name, fields.get(name))

    def obj_reset_changes(self, *args, **kwargs):
        return None

    def to_dict(self):
        return {name: getattr(self, name) for name in self.FIELDS}


class RecordBook(object):
    """The records of one repository, in a JSON file."""

    def __init__(self, path):
        self.path = path
        self.records = {}
        if os.path.exists(path):
            with open(path) as f:
                for rec in json.load(f):
                    self.records[rec['id']] = Record(**rec)

    def save(self):
        with open(self.path, 'w') as f:
            json.dump([r.to_dict() for r in self.records.values()], f)

    def get(self, backup_id):
        return self.records[backup_id]


class BenchEnvironment(object):
    """Our engine's environment (what Cinder's database gives upstream)."""

    def __init__(self, book, size_gib):
        self.book = book
        self.size_gib = size_gib

    def get_backup(self, backup_id):
        return self.book.get(backup_id)

    def volume_size_gib(self, volume_id):
        return self.size_gib

    def notify_progress(self, backup, usage_info):
        return None

    def get_volume_metadata(self, volume_id):
        return None

    def put_volume_metadata(self, volume_id, json_metadata):
        return None
