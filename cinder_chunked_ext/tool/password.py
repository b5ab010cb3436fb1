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

"""The password of an encrypted repository (``--password-file``).

As restic reads its ``--password-file``: the file's first line, without
its line ending, is the password; the file is read once, and the
password goes only to :class:`PasswordKeys`, which derives keys from it
with scrypt.  It is never logged nor stored.
"""

import os

from cinder_chunked_ext.tool import exit_status

ENV = 'CINDER_CHUNKED_BACKUP_PASSWORD_FILE'


def read_password(path):
    """The password in the file at ``path`` (bytes)."""
    try:
        with open(os.path.expanduser(path), 'rb') as f:
            first = f.readline()
    except FileNotFoundError:
        raise exit_status.NotFoundError('password file %s does not exist'
                                        % path)
    except IsADirectoryError:
        raise exit_status.UsageError('password file %s is a directory'
                                     % path)
    password = first.rstrip(b'\r\n')
    if not password:
        raise exit_status.UsageError('password file %s is empty' % path)
    return password


def password_keys(path):
    """The key source of ``path``'s password, or None without a file."""
    if not path:
        return None
    from cinder_chunked_ext.encryption import keys
    return keys.PasswordKeys(read_password(path))
