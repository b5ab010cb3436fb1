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

"""Where the engine's records live: Cinder's database or a catalog.

The engine needs four things from its surroundings: the backup record
of an id (to follow parent links), the size of a volume, a place to send
progress notifications, and the volume metadata to store with a backup.
Inside ``cinder-backup`` those are Cinder's objects, database and
notifier.  The standalone tool passes a context that carries its own
environment (attribute ``chunked_environment``) backed by its catalog.
"""

from cinder_chunked_ext import cinder_compat


class CinderEnvironment(object):
    """The engine's surroundings inside cinder-backup."""

    def __init__(self, driver):
        self._driver = driver

    def get_backup(self, backup_id):
        return cinder_compat.get_backup_by_id(self._driver.context,
                                              backup_id)

    def volume_size_gib(self, volume_id):
        volume = self._driver.db.volume_get(self._driver.context, volume_id)
        return volume['size']

    def notify_progress(self, backup, usage_info):
        cinder_compat.notify_backup_progress(self._driver.context, backup,
                                             usage_info)

    def get_volume_metadata(self, volume_id):
        return cinder_compat.BackupDriver.get_metadata(self._driver,
                                                       volume_id)

    def put_volume_metadata(self, volume_id, json_metadata):
        cinder_compat.BackupDriver.put_metadata(self._driver, volume_id,
                                                json_metadata)


def for_driver(driver):
    """The environment a driver's context asks for."""
    own = getattr(driver.context, 'chunked_environment', None)
    if own is not None:
        return own
    return CinderEnvironment(driver)
