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

"""Which object prefix, and which objects, belong to a backup.

A backup's record keeps its object prefix in ``service_metadata``, and
deleting the backup removes what listing its container by that prefix
finds.  A record whose prefix is empty, or is another backup's, therefore
deletes other backups: a record imported with ``service_metadata: ''``
deleted every object of its container.  Upstream Cinder has the same
hole.

Every prefix a chunked driver generates, ours and upstream Cinder's,
ends with ``_backup_<backup id>``:

* POSIX and NFS: ``volume_<volume id>_<UTC %Y%m%d%H%M%S>_backup_<id>``;
* S3, Swift (and upstream's Google Cloud Storage):
  ``volume_<volume id>/<UTC %Y%m%d%H%M%S>/az_<zone>_backup_<id>``.

and the objects of a backup are ``<prefix>-NNNNN`` (five digits or more),
``<prefix>_sha256file`` and ``<prefix>_metadata``.  :func:`check`
refuses a prefix that does not end as the backup's own does;
:func:`owns` tells the backup's objects from any other object whose name
merely starts with the prefix (another backup's, when the prefix is a
strict prefix of that backup's prefix).
"""

from cinder_chunked_ext.engine import manifest
from cinder_chunked_ext import exception

#: What a refused delete tells the operator to do.
REMEDY = ('nothing was deleted. Set the record\'s service_metadata to the '
          'backup\'s own object prefix (its objects\' names without their '
          '-NNNNN, _metadata or _sha256file ending), or to NULL if it has '
          'no objects, then delete it again')


def expected_ending(backup_id):
    """The end of every prefix generated for backup ``backup_id``."""
    return '_backup_%s' % backup_id


def problem(backup_id, prefix):
    """Why ``prefix`` cannot be the object prefix of ``backup_id``, or None.

    ``None`` as a prefix is accepted: a backup that never started has
    none, and no object.
    """
    if prefix is None:
        return None
    if not isinstance(prefix, str):
        return 'it is not a string'
    if not prefix:
        return ('it is empty, and would name every object of the '
                'container')
    if not backup_id or not isinstance(backup_id, str):
        return 'the backup has no id to check it against'
    if not prefix.endswith(expected_ending(backup_id)):
        return ('it does not end with %r as every prefix a driver '
                'generates for this backup does, so it may name another '
                'backup\'s objects' % expected_ending(backup_id))
    return None


def check(backup_id, prefix):
    """Raise :class:`UnsafePrefix` unless ``prefix`` is the backup's own."""
    reason = problem(backup_id, prefix)
    if reason is not None:
        raise exception.UnsafePrefix(backup_id=backup_id, prefix=prefix,
                                     reason='%s; %s' % (reason, REMEDY))


def owns(prefix, name):
    """True when object ``name`` is one of the objects of ``prefix``."""
    if not prefix or not name.startswith(prefix):
        return False
    return (name in (manifest.metadata_name(prefix),
                     manifest.sha256file_name(prefix))
            or manifest.object_number(prefix, name) is not None)


def check_listing(backup_id, prefix, names):
    """Raise :class:`UnsafePrefix` if ``names`` holds other objects.

    ``names`` is what listing the container by ``prefix`` found; an
    object that is not one of the backup's (see :func:`owns`) belongs to
    something else, perhaps a backup whose prefix starts with this one.
    """
    others = sorted(n for n in names if not owns(prefix, n))
    if others:
        shown = ', '.join(others[:5]) + (', ...' if len(others) > 5 else '')
        raise exception.UnsafePrefix(
            backup_id=backup_id, prefix=prefix,
            reason='%d object(s) in the container start with it but are '
                   'not objects of this backup (%s); nothing was deleted. '
                   'Move them away if no backup owns them, or correct the '
                   'record\'s service_metadata, then delete it again'
                   % (len(others), shown))
