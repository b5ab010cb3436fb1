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

"""castellan's own in-process key manager, shared by every instance.

``[key_manager] backend = cinder_chunked_ext.tests.key_manager.
SharedKeyManager`` makes castellan load it.  Cinder makes a driver (and
so a key manager) per operation: the keys must outlive each instance,
as Barbican's do.  ``SharedKeyManager.unreachable`` makes every call
fail as an unreachable Barbican does (castellan's KeyManagerError).
"""

from castellan.common import exception as castellan_exception
from castellan.tests.unit.key_manager import mock_key_manager

BACKEND = 'cinder_chunked_ext.tests.key_manager.SharedKeyManager'


class SharedKeyManager(mock_key_manager.MockKeyManager):

    stored = {}
    unreachable = False

    def __init__(self, configuration=None):
        super().__init__(configuration)
        self.keys = SharedKeyManager.stored

    @classmethod
    def reset(cls):
        cls.stored.clear()
        cls.unreachable = False

    def _check(self):
        if SharedKeyManager.unreachable:
            raise castellan_exception.KeyManagerError(
                reason='Connection refused (test)')

    def store(self, context, managed_object, expiration=None):
        self._check()
        return super().store(context, managed_object, expiration)

    def get(self, context, managed_object_id, metadata_only=False):
        self._check()
        return super().get(context, managed_object_id, metadata_only)

    def delete(self, context, managed_object_id, force=False):
        self._check()
        return super().delete(context, managed_object_id, force)
