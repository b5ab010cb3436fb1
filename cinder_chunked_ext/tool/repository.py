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

"""The repository a run works on: there, made, and kept tidy.

Only ``backup create`` makes a repository (a POSIX directory; a bucket
or a container is made by the driver, as in ``cinder-backup``, when
``backup_create_containers`` allows it).  Every other command reads one
and fails, with status 3, when it is missing or not a directory, bucket
or container: a typo or an unmounted share must not pass for an empty
repository.  An NFS share is checked by its mount, when the driver
first reaches it.

The POSIX layout puts each backup in a directory of its own
(``xx/yy/<id>``); :func:`remove_empty_container` removes it, and its
parents left empty, once the backup is deleted.
"""

import os

from oslo_config import cfg

from cinder_chunked_ext.tool import exit_status

CONF = cfg.CONF


def require(session, containers=None):
    """Fail (:class:`exit_status.NotFoundError`) unless the repository is.

    ``containers``: the containers a command was told to read
    (``--container``); an object store is then checked through them.
    """
    name = session.driver_name
    if name == 'posix':
        root = CONF.backup_posix_path
        if not os.path.exists(root):
            raise exit_status.NotFoundError(
                'repository %s does not exist (backup create makes a new '
                'one)' % root)
        if not os.path.isdir(root):
            raise exit_status.NotFoundError(
                'repository %s is not a directory' % root)
    elif name in ('s3', 'swift'):
        from cinder_chunked_ext import exception
        _env, driver = session.repository_driver()
        kind = 'bucket' if name == 's3' else 'container'
        for container in containers or [driver.backup_default_container]:
            try:
                driver.store.put_container(container, create=False)
            except exception.ObjectNotFound:
                raise exit_status.NotFoundError(
                    'repository %s: %s %s does not exist'
                    % (session.repository_text(), kind, container))


def create_posix(session):
    """Make a missing POSIX repository; True when it was made.

    A path that exists and is not a directory is refused (status 3).
    """
    if session.driver_name != 'posix':
        return False
    root = CONF.backup_posix_path
    if os.path.isdir(root):
        return False
    if os.path.exists(root):
        raise exit_status.NotFoundError('repository %s is not a directory'
                                        % root)
    os.makedirs(root, exist_ok=True)
    return True


def posix_store(driver=None, store=None):
    """The POSIX store (also an NFS share's) given or the driver's, or None."""
    from cinder_chunked_ext.store import posix
    if store is None:
        store = getattr(driver, 'store', None)
    return store if isinstance(store, posix.PosixStore) else None


def remove_empty_container(driver, container):
    """Remove ``container``'s directory and its parents left empty.

    Only empty directories go (``rmdir``), never the repository's root;
    a directory another backup uses is not empty and stays.  Returns the
    directories removed.
    """
    store = posix_store(driver)
    if store is None or not container:
        return []
    return remove_empty_dirs(store, container)


def remove_empty_dirs(store, container):
    """:func:`remove_empty_container` on a POSIX store."""
    root = os.path.realpath(store.root)
    path = store.container_path(container)
    removed = []
    while True:
        real = os.path.realpath(path)
        if real == root or not real.startswith(root + os.sep):
            break
        try:
            os.rmdir(path)
        except OSError:
            break   # not empty (another backup), or gone already
        removed.append(path)
        path = os.path.dirname(path)
    return removed


def empty_directories(store):
    """``(container, mtime)`` of the highest empty directories under root.

    A directory is empty when it holds no file, at any depth; hidden
    directories (``.``) are skipped, as the store skips them.
    """
    root = store.root
    if not os.path.isdir(root):
        return []
    empty = set()
    found = []
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        relative = os.path.relpath(dirpath, root)
        if relative == os.curdir or any(
                part.startswith('.') for part in relative.split(os.sep)):
            continue
        subdirs = [os.path.join(dirpath, d) for d in dirnames]
        if not filenames and all(d in empty for d in subdirs):
            empty.add(dirpath)
    for path in sorted(empty):
        if os.path.dirname(path) in empty:
            continue    # its parent is reported, and goes with it
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            continue
        found.append((os.path.relpath(path, root).replace(os.sep, '/'),
                      mtime))
    return found


def remove_empty_tree(store, container):
    """Remove an empty directory tree, bottom up, with ``rmdir`` only."""
    top = store.container_path(container)
    for dirpath, _dirnames, _filenames in os.walk(top, topdown=False):
        os.rmdir(dirpath)
