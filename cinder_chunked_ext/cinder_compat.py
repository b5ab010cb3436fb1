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

"""The few pieces of Cinder the drivers use, real or stood in for.

When Cinder is importable (inside ``cinder-backup``) everything here is
Cinder's own: the ``BackupDriver`` base class, the exception classes the
backup manager knows how to handle, the backup status names and the
progress notifier.  Without Cinder (the standalone tool, unit tests) a
small stand-in with the same names and behaviour lets the package import
and run.  Nothing else in the package imports Cinder directly.
"""

import abc

try:  # pragma: no cover - which branch runs depends on the environment
    from cinder.backup import driver as _cinder_driver
    from cinder import exception as _cinder_exception
    from cinder.objects import fields as _cinder_fields
    HAVE_CINDER = True
except ImportError:
    HAVE_CINDER = False


if HAVE_CINDER:
    BackupDriver = _cinder_driver.BackupDriver
    CinderException = _cinder_exception.CinderException
    BackupDriverException = _cinder_exception.BackupDriverException
    BackupRestoreCancel = _cinder_exception.BackupRestoreCancel
    BackupOperationError = _cinder_exception.BackupOperationError
    BackupMetadataUnsupportedVersion = (
        _cinder_exception.BackupMetadataUnsupportedVersion)
    InvalidBackup = _cinder_exception.InvalidBackup
    InvalidVolume = _cinder_exception.InvalidVolume
    InvalidConfigurationValue = _cinder_exception.InvalidConfigurationValue
    ConfigNotFound = _cinder_exception.ConfigNotFound
    NotFound = _cinder_exception.NotFound
    BackupNotFound = _cinder_exception.BackupNotFound
    BackupStatus = _cinder_fields.BackupStatus
else:
    class CinderException(Exception):
        """Stand-in for Cinder's base exception: printf-style messages."""

        message = 'An unknown exception occurred.'
        code = 500

        def __init__(self, message=None, **kwargs):
            self.kwargs = dict(kwargs)
            if not message:
                try:
                    message = self.message % kwargs
                except (KeyError, TypeError, ValueError):
                    message = self.message
            self.msg = str(message)
            super().__init__(self.msg)

    class BackupDriverException(CinderException):
        message = 'Backup driver reported an error: %(reason)s'

    class BackupRestoreCancel(CinderException):
        message = 'Canceled backup %(back_id)s restore on volume %(vol_id)s'

    class Invalid(CinderException):
        message = 'Unacceptable parameters.'
        code = 400

    class BackupOperationError(Invalid):
        message = 'An error has occurred during backup operation'

    class BackupMetadataUnsupportedVersion(BackupDriverException):
        message = 'Unsupported backup metadata version requested'

    class InvalidBackup(Invalid):
        message = 'Invalid backup: %(reason)s'

    class InvalidVolume(Invalid):
        message = 'Invalid volume: %(reason)s'

    class InvalidConfigurationValue(Invalid):
        message = ('Value "%(value)s" is not valid for configuration '
                   'option "%(option)s"')

    class NotFound(CinderException):
        message = 'Resource could not be found.'
        code = 404

    class ConfigNotFound(NotFound):
        message = 'Could not find config at %(path)s'

    class BackupNotFound(NotFound):
        message = 'Backup %(backup_id)s could not be found.'

    class BackupStatus(object):
        """Backup status names, as Cinder's objects.fields spells them."""

        ERROR = 'error'
        ERROR_DELETING = 'error_deleting'
        CREATING = 'creating'
        AVAILABLE = 'available'
        DELETING = 'deleting'
        DELETED = 'deleted'
        RESTORING = 'restoring'

    class BackupDriver(object, metaclass=abc.ABCMeta):
        """Stand-in for cinder.backup.driver.BackupDriver.

        Volume metadata is handled by the environment the driver runs in
        (see :mod:`cinder_chunked_ext.engine.environment`).
        """

        def __init__(self, context):
            self.context = context
            self.support_force_delete = False

        def get_metadata(self, volume_id):
            return None

        def put_metadata(self, volume_id, json_metadata):
            return None

        @abc.abstractmethod
        def backup(self, backup, volume_file, backup_metadata=False):
            """Start a backup of a specified volume."""

        @abc.abstractmethod
        def restore(self, backup, volume_id, volume_file, volume_is_new):
            """Restore a saved backup."""

        @abc.abstractmethod
        def delete_backup(self, backup):
            """Delete a saved backup."""

        def export_record(self, backup):
            return {}

        def import_record(self, backup, driver_info):
            return None

        def check_for_setup_error(self):
            return None


def get_backup_by_id(context, backup_id):
    """Load a backup record through Cinder's objects layer."""
    if not HAVE_CINDER:
        raise BackupNotFound(backup_id=backup_id)
    from cinder import objects
    return objects.Backup.get_by_id(context, backup_id)


def notify_backup_progress(context, backup, usage_info):
    """Send a ``backup.createprogress`` notification through Cinder."""
    if not HAVE_CINDER:
        return
    from cinder.volume import volume_utils
    volume_utils.notify_about_backup_usage(
        context, backup, 'createprogress', extra_usage_info=usage_info)


def service_token_headers():
    """``{'X-Service-Token': ...}`` from Cinder's service user, or None.

    Cinder's ``[service_user]`` section configures the service user
    (``send_service_user_token``); without Cinder there is none.
    """
    if not HAVE_CINDER:
        return None
    from cinder import service_auth
    plugin = service_auth.get_service_auth_plugin()
    if plugin is None:
        return None
    token = plugin.get_token(session=service_auth.get_service_session())
    return {'X-Service-Token': token} if token else None


def root_helper():
    """Cinder's root helper command line, or plain sudo without Cinder."""
    if HAVE_CINDER:
        from cinder import utils
        return utils.get_root_helper()
    return 'sudo'


def same_as_upstream(opts, module_name, attr):
    """Cinder's own option objects where it defines the same names.

    oslo.config raises DuplicateOptError when two different option
    objects are registered under one name.  Registering Cinder's objects
    whenever Cinder is importable means our drivers and Cinder's can be
    imported into one process in either order; without Cinder our own
    definitions (same names and defaults) are used.
    """
    if not HAVE_CINDER:
        return list(opts)
    import importlib
    try:
        module = importlib.import_module(module_name)
        theirs = {opt.dest: opt for opt in getattr(module, attr)}
    except (ImportError, AttributeError):
        return list(opts)
    return [theirs.get(opt.dest, opt) for opt in opts]


def register_common_opts(conf, opts):
    """Register ``state_path`` and the availability zone, once.

    Inside Cinder they are Cinder's own options (``cinder.common.config``
    registers them when imported); without Cinder ours are registered.
    """
    if HAVE_CINDER:  # pragma: no cover - depends on environment
        import cinder.common.config  # noqa: F401 - registers them
    else:
        conf.register_opts(opts)


# -- Cinder's database, for ``cinder-chunked-backup cinder adopt/release`` --

class BackupRecord(object):
    """What the adopt/release commands need of one ``backups`` row."""

    __slots__ = ('id', 'status', 'service', 'parent_id', 'volume_id',
                 'host', 'container', 'prefix', 'num_dependent_backups')

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields.get(name))


def open_cinder_database(config_files):
    """Load Cinder's configuration; an admin context on its database.

    Cinder's own configuration object and database API are used, so
    the ``[database]`` section of ``cinder.conf`` applies as it does to
    the services.
    """
    if not HAVE_CINDER:
        raise ConfigNotFound(path='cinder (the package is not installed)')
    from oslo_config import cfg

    from cinder.common import config  # noqa: F401 - registers options
    from cinder import context
    from cinder.db import api as db_api  # noqa: F401 - database options
    from cinder import objects
    objects.register_all()
    cfg.CONF(args=[], project='cinder', prog='cinder-chunked-backup',
             default_config_files=list(config_files),
             default_config_dirs=[])
    return context.get_admin_context()


def cinder_backup_records(context):
    """Every backup that is not deleted, as :class:`BackupRecord`."""
    from cinder import objects
    return [BackupRecord(id=b.id, status=b.status, service=b.service,
                         parent_id=b.parent_id, volume_id=b.volume_id,
                         host=b.host, container=b.container,
                         prefix=b.service_metadata,
                         num_dependent_backups=b.num_dependent_backups)
            for b in objects.BackupList.get_all(context)]


def cinder_set_backup_service(context, backup_id, old, new, statuses):
    """Record ``new`` as the backup's service, compare-and-swap.

    The row changes only if it still names ``old`` and its status is
    one of ``statuses``, in one UPDATE: a running cinder-backup that
    changed the backup in the meantime wins.  True when it changed.
    """
    from cinder import objects
    backup = objects.Backup.get_by_id(context, backup_id)
    return bool(backup.conditional_update(
        {'service': new},
        {'service': old, 'status': list(statuses), 'deleted': False}))
