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

"""Loop devices over the live test's volume files (``losetup``).

The test-only volume driver (:mod:`file_volume`) hands a connection a
loop device where the cluster found it can attach one; the cluster
detaches, when it stops, whatever a killed service left attached.
"""

import os
import subprocess


def devices_of(path):
    """The loop devices backed by the file at ``path``."""
    result = subprocess.run(['losetup', '--associated', path],
                            capture_output=True, text=True, check=False)
    return [line.split(':', 1)[0] for line in result.stdout.splitlines()
            if line.startswith('/dev/')]


def attach(path):
    """``(device, None)``, or ``(None, why)`` when none can be had."""
    try:
        result = subprocess.run(['losetup', '--find', '--show', path],
                                capture_output=True, text=True, check=False)
    except OSError as e:
        return None, str(e)
    device = result.stdout.strip()
    if result.returncode or not device.startswith('/dev/'):
        return None, result.stderr.strip() or 'losetup failed'
    return device, None


def detach(path):
    """Detach every loop device backed by the file at ``path``."""
    for device in devices_of(path):
        subprocess.run(['losetup', '--detach', device], capture_output=True,
                       check=False)


def detach_all(directory):
    """Detach every loop device backed by a file in ``directory``."""
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        detach(os.path.join(directory, name))


def usable(directory):
    """True when a loop device can be attached here (a probe)."""
    probe = os.path.join(directory, '.loop-probe')
    try:
        with open(probe, 'wb') as f:
            f.truncate(1024 * 1024)
    except OSError:
        return False
    try:
        device, _why = attach(probe)
        if device is None:
            return False
        detach(probe)
        return True
    finally:
        os.unlink(probe)
