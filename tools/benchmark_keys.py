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

"""A key manager for the benchmark's ``*-aes-km`` configurations.

castellan's own in-process key manager, its keys kept in a JSON file so
that the benchmark's phase processes (a full backup, then an
incremental, then restores, each a process of its own) share them, as
``cinder-backup`` processes share Barbican.  Loaded by castellan from
``[key_manager] backend = benchmark_keys.FileKeyManager``; the file is
``$CINDER_CHUNKED_BENCH_KEYS``.  Not for anything but the benchmark: the
keys are in plain text in that file.
"""

import binascii
import collections.abc
import json
import os

from castellan.common.objects import symmetric_key
from castellan.tests.unit.key_manager import mock_key_manager

from cinder_chunked_ext import locks

PATH_VARIABLE = 'CINDER_CHUNKED_BENCH_KEYS'
BACKEND = 'benchmark_keys.FileKeyManager'


class _FileKeys(collections.abc.MutableMapping):
    """Symmetric keys by ID, written through to a JSON file."""

    def __init__(self, path):
        self._path = path
        self._lock = locks.native_lock()

    def _load(self):
        try:
            with open(self._path) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def _save(self, keys):
        temp = self._path + '.tmp'
        with open(temp, 'w') as f:
            json.dump(keys, f)
        os.replace(temp, self._path)

    def __getitem__(self, key_id):
        with self._lock:
            entry = self._load()[key_id]
        return symmetric_key.SymmetricKey(
            entry['algorithm'], entry['bits'],
            binascii.unhexlify(entry['key']), entry['name'], id=key_id)

    def __setitem__(self, key_id, key):
        with self._lock:
            keys = self._load()
            keys[key_id] = {'algorithm': key.algorithm,
                            'bits': key.bit_length,
                            'key': binascii.hexlify(key.get_encoded()
                                                    ).decode(),
                            'name': key.name}
            self._save(keys)

    def __delitem__(self, key_id):
        with self._lock:
            keys = self._load()
            del keys[key_id]
            self._save(keys)

    def __iter__(self):
        with self._lock:
            return iter(list(self._load()))

    def __len__(self):
        with self._lock:
            return len(self._load())


class FileKeyManager(mock_key_manager.MockKeyManager):

    def __init__(self, configuration=None):
        super().__init__(configuration)
        self.keys = _FileKeys(os.environ[PATH_VARIABLE])
