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

"""``repository rekey``: change the password of an encrypted repository.

Each backup's data key is wrapped under the password; changing it
re-wraps the key under the new password and seals the backup's two
envelopes (``_sha256file``, then ``_metadata``) again.  The data
objects are not touched.  A backup already under the new password is
left alone, so an interrupted run is finished by running it again;
until then each backup opens with one of the two passwords.
"""

from cinder_chunked_ext.engine import manifest
from cinder_chunked_ext import exception
from cinder_chunked_ext.tool import exit_status
from cinder_chunked_ext.tool import password


def add_parser(repo_cmds):
    rekey = repo_cmds.add_parser(
        'rekey', help='change the password of the encrypted backups',
        description='Re-wrap the key of every password-encrypted backup '
                    'of the repository under a new password '
                    '(--password-file is the current one). Data objects '
                    'are not rewritten.')
    rekey.add_argument('--new-password-file', metavar='FILE',
                       required=True,
                       help='the new password, on the first line of FILE')
    rekey.add_argument('--container', action='append',
                       help='this container only (default: the whole '
                            'POSIX repository, or the configured bucket)')
    rekey.set_defaults(func=cmd_repository_rekey)
    return rekey


def _documents(prefix):
    # The sha256file first: the metadata completes a backup.
    return (manifest.sha256file_name(prefix), manifest.metadata_name(prefix))


def rekey_document(driver, container, name, old_keys, new_keys):
    """Re-wrap one document; return what happened to it."""
    from cinder_chunked_ext.encryption import documents
    try:
        raw = driver._read_object_fully(container, name)
    except exception.ObjectNotFound:
        return 'missing'
    ref = documents.key_reference(raw)
    if ref is None:
        return 'plain'
    if ref.get('manager') != new_keys.name:
        return 'key manager'
    backup_id = documents.backup_id_of(raw)
    try:
        new_keys.get_key(ref, backup_id)
        return 'already'
    except exception.BackupKeyUnavailable:
        pass
    data_key = old_keys.get_key(ref, backup_id)
    driver._write_object_fully(
        container, name,
        documents.reseal(raw, name, data_key, new_keys.wrap(data_key)))
    return 'rekeyed'


def cmd_repository_rekey(session, args):
    old_keys = session.password_keys
    if old_keys is None:
        raise exit_status.UsageError(
            'repository rekey needs --password-file: the current password')
    new_keys = password.password_keys(args.new_password_file)
    env, driver = session.repository_driver()
    try:
        entries = env.scan(args.container or None)
    except exception.ObjectNotFound as e:
        raise exit_status.NotFoundError(str(e))
    counts = {'rekeyed': 0, 'already': 0, 'plain': 0, 'key manager': 0,
              'missing': 0}
    backups = []
    for entry in entries:
        outcomes = [rekey_document(driver, entry.container, name, old_keys,
                                   new_keys)
                    for name in _documents(entry.prefix)]
        outcome = ('rekeyed' if 'rekeyed' in outcomes else outcomes[-1])
        counts[outcome] += 1
        backups.append({'container': entry.container,
                        'prefix': entry.prefix, 'result': outcome})
    lines = ['%d backup(s) re-keyed, %d already under the new password, '
             '%d not encrypted, %d with keys in a key manager (left '
             'alone).' % (counts['rekeyed'], counts['already'],
                          counts['plain'], counts['key manager'])]
    session.out.result({'repository': session.repository_text(),
                        'counts': counts, 'backups': backups}, lines)
    return exit_status.OK
