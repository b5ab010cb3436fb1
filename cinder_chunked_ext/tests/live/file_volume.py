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

"""A test-only volume driver: each volume is a sparse file.

cinder-volume loads it (``volume_driver =
cinder_chunked_ext.tests.live.file_volume.FileVolumeDriver``) in the
live tests.  A volume is attached as a ``local`` connection, so
os-brick's ``LocalConnector`` hands the file's path to the backup
manager, which opens it as it would a block device.

The backup manager opens a restore target with ``'wb'``, which
truncates a regular file; a block device keeps its size, so the file is
extended back to the volume's size when the connection ends.

With ``file_volume_loop_devices`` (set by the live cluster where it can
attach them: as root, with ``losetup``), a connection hands over a loop
device backed by the file instead, as an LVM or iSCSI volume is a block
device: the backup manager opens a real block device, ``'wb'`` truncates
nothing, and a restore over the volume can read it.  The device is
detached when the connection ends (and before the volume is deleted);
:func:`loop_devices.detach_all` detaches what a killed service left.
"""

import os

from cinder.volume import driver
from oslo_config import cfg
from oslo_log import log as logging

from cinder_chunked_ext.tests.live import loop_devices

LOG = logging.getLogger(__name__)
GiB = 1024 ** 3

file_volume_opts = [
    cfg.StrOpt('file_volume_directory',
               help='Directory that holds one sparse file per volume.'),
    cfg.BoolOpt('file_volume_loop_devices',
                default=False,
                help='Hand a connection a loop device backed by the '
                     'volume\'s file rather than the file.'),
]


class FileVolumeDriver(driver.VolumeDriver):
    """Volumes as sparse files, exported as ``local`` connections."""

    VERSION = '1.0.0'
    CI_WIKI_NAME = 'none'

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.configuration.append_config_values(file_volume_opts)
        self.directory = None

    @staticmethod
    def get_driver_options():
        return file_volume_opts

    def do_setup(self, context):
        self.directory = self.configuration.file_volume_directory
        os.makedirs(self.directory, exist_ok=True)

    def check_for_setup_error(self):
        if not os.path.isdir(self.directory):
            raise RuntimeError('no directory %s' % self.directory)

    def local_path(self, volume):
        return os.path.join(self.directory, 'volume-%s' % volume.id)

    def _extend_file(self, volume, size_gb):
        path = self.local_path(volume)
        with open(path, 'ab') as f:
            if os.fstat(f.fileno()).st_size < size_gb * GiB:
                f.truncate(size_gb * GiB)

    def create_volume(self, volume):
        self._extend_file(volume, volume.size)
        return {}

    def delete_volume(self, volume):
        self._detach(volume)
        try:
            os.unlink(self.local_path(volume))
        except FileNotFoundError:
            pass

    def extend_volume(self, volume, new_size):
        self._extend_file(volume, new_size)

    def create_export(self, context, volume, connector):
        return None

    def ensure_export(self, context, volume):
        return None

    def remove_export(self, context, volume):
        return None

    def initialize_connection(self, volume, connector):
        path = self.local_path(volume)
        if self.configuration.safe_get('file_volume_loop_devices'):
            device, why = loop_devices.attach(path)
            if device is not None:
                LOG.info('Volume %s attached as %s.', volume.id, device)
                path = device
            else:
                LOG.warning('No loop device for volume %s (%s); handing '
                            'over its file.', volume.id, why)
        return {'driver_volume_type': 'local',
                'data': {'device_path': path}}

    def terminate_connection(self, volume, connector, **kwargs):
        self._detach(volume)
        # A restore opened the file with 'wb': give it its size back.
        if os.path.exists(self.local_path(volume)):
            self._extend_file(volume, volume.size)

    def _detach(self, volume):
        if not self.configuration.safe_get('file_volume_loop_devices'):
            return
        loop_devices.detach(self.local_path(volume))

    def _update_volume_stats(self):
        name = self.configuration.safe_get('volume_backend_name')
        self._stats = {
            'volume_backend_name': name or 'file',
            'vendor_name': 'cinder_chunked_ext tests',
            'driver_version': self.VERSION,
            'storage_protocol': 'local',
            'pools': [{
                'pool_name': 'files',
                'total_capacity_gb': 1000,
                'free_capacity_gb': 1000,
                'reserved_percentage': 0,
                'QoS_support': False,
                'thin_provisioning_support': True,
                'thick_provisioning_support': False,
                'max_over_subscription_ratio': 20.0,
                'multiattach': False,
            }],
        }

    def get_volume_stats(self, refresh=False):
        if refresh or not self._stats:
            self._update_volume_stats()
        return self._stats
