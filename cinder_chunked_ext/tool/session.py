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

"""One run of ``cinder-chunked-backup``: its configuration and drivers.

A :class:`Session` reads the configuration files and the global options
into oslo.config as ``cinder-backup`` would, and gives the commands the
catalog, the driver and the records they work on.

The engine is imported only after :func:`keep_cinder_out` (the program
runs on the package's stand-ins for Cinder) and inside
:func:`quiet_import_engine`; nothing here imports it at module level.
"""

import hashlib
import logging
import os
import re
import sys
import warnings

from oslo_config import cfg

from cinder_chunked_ext.tool import exit_status
from cinder_chunked_ext.tool import password
from cinder_chunked_ext.tool import progress

PROG = 'cinder-chunked-backup'
APP_DIR = 'cinder-chunked-backup'
CATALOG_NAME = 'catalog.sqlite3'
WITH_CINDER_ENV = 'CINDER_CHUNKED_BACKUP_WITH_CINDER'
#: Environment variables read when --repository / --catalog are not given.
REPOSITORY_ENV = 'CINDER_CHUNKED_BACKUP_REPOSITORY'
CATALOG_ENV = 'CINDER_CHUNKED_BACKUP_CATALOG'
CATALOGS_DIR = 'catalogs'
# Options that tell two object stores apart (same bucket name, two
# endpoints), per driver.
ENDPOINT_OPTIONS = {
    's3': ('backup_s3_endpoint_url',),
    'swift': ('backup_swift_url', 'backup_swift_auth_url',
              'backup_swift_user', 'backup_swift_project',
              'backup_swift_tenant'),
}
# What --repository sets, per driver.
REPOSITORY_OPTION = {
    'posix': 'backup_posix_path',
    'nfs': 'backup_share',
    's3': 'backup_s3_store_bucket',
    'swift': 'backup_swift_container',
}
DRIVERS = tuple(REPOSITORY_OPTION)

LOG = logging.getLogger(__name__)
CONF = cfg.CONF


def user_data_dir():
    base = os.environ.get('XDG_DATA_HOME') or os.path.join(
        os.path.expanduser('~'), '.local', 'share')
    return os.path.join(base, APP_DIR)


def default_repository():
    return os.path.join(user_data_dir(), 'repository')


def default_catalog(driver_name, repository, endpoint=''):
    """The catalog of a repository that cannot hold one (nfs, s3, swift).

    One file per repository, so that two buckets (or containers, or
    shares) never share a catalog: ``catalogs/<driver>-<name>-<hash>``
    under :func:`user_data_dir`, the hash covering the driver, the
    endpoint and the name as given.
    """
    name = repository or ''
    safe = re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('._-')[:64]
    digest = hashlib.sha256('\n'.join(
        (driver_name, endpoint or '', name)).encode('utf-8')).hexdigest()
    return os.path.join(user_data_dir(), CATALOGS_DIR, '%s-%s-%s.sqlite3'
                        % (driver_name, safe or 'default', digest[:10]))


def keep_cinder_out():
    """Run the tool on the package's own stand-ins for Cinder.

    The tool needs nothing from Cinder: the stand-ins in
    :mod:`cinder_chunked_ext.cinder_compat` have the same option names
    and defaults, exceptions and statuses.  Importing Cinder (when it is
    installed beside the package) would cost a second or more at every
    start and print eventlet warnings.  ``CINDER_CHUNKED_BACKUP_WITH_CINDER=1``
    imports it all the same (for example so that the NFS driver mounts
    through Cinder's root helper).
    """
    if os.environ.get(WITH_CINDER_ENV, '').lower() in ('1', 'true', 'yes'):
        return
    if 'cinder' not in sys.modules:
        sys.modules['cinder'] = None   # "import cinder" raises ImportError


def quiet_import_engine(debug):
    """Import the engine (and Cinder, when used) quietly.

    Cinder's import of eventlet prints a deprecation warning on stderr;
    the tool keeps stderr for its own messages unless ``--debug``.
    """
    with warnings.catch_warnings():
        if not debug:
            warnings.simplefilter('ignore')
        from cinder_chunked_ext import cinder_compat
        from cinder_chunked_ext.engine import driver as chunked  # noqa: F401
    LOG.debug('%s runs %s.', PROG, 'with Cinder\'s classes'
              if cinder_compat.HAVE_CINDER else 'without Cinder')


def load_driver_class(name):
    """The driver class registered as ``name`` (stevedore, else import).

    The names are those of :mod:`cinder_chunked_ext.opts`, which imports
    the engine: call this after :func:`quiet_import_engine`.
    """
    import importlib

    import stevedore
    from stevedore import exception as stevedore_exception

    from cinder_chunked_ext import opts

    def fail(manager, entrypoint, error):
        raise error

    try:
        try:
            manager = stevedore.DriverManager(
                opts.DRIVER_NAMESPACE, name, invoke_on_load=False,
                on_load_failure_callback=fail,
                warn_on_missing_entrypoint=False)
            return manager.driver
        except stevedore_exception.NoMatches:
            pass    # not installed (a source tree): import the known path
        module_name, _sep, class_name = \
            opts.KNOWN_DRIVERS[name].partition(':')
        return getattr(importlib.import_module(module_name), class_name)
    except ImportError as e:
        raise exit_status.UsageError('driver %s cannot be loaded: %s'
                                     % (name, e))


class Session(object):
    """Configuration, catalog and drivers of one command run."""

    def __init__(self, args, out):
        self.args = args
        self.out = out
        self.driver_name = args.driver or 'posix'
        self.driver_class = None
        self._catalog = None
        self.repository_override = None
        self.catalog_override = None
        self.password_keys = None
        self._warned = False

    # -- configuration ---------------------------------------------------

    def configure(self):
        args = self.args
        self.driver_class = load_driver_class(self.driver_name)
        files = []
        for path in args.config_file or []:
            if not os.path.exists(path):
                raise exit_status.NotFoundError(
                    'configuration file %s does not exist' % path)
            if not os.path.isfile(path):
                raise exit_status.UsageError(
                    'configuration file %s is not a file' % path)
            files.append(os.path.abspath(path))
        CONF(args=[], project='cinder', prog=PROG,
             default_config_files=files, default_config_dirs=[])
        repository = (self.repository_override or args.repository or
                      os.environ.get(REPOSITORY_ENV) or None)
        option = REPOSITORY_OPTION[self.driver_name]
        if repository:
            if self.driver_name == 'posix':
                repository = os.path.abspath(os.path.expanduser(repository))
            self._override(option, repository, '--repository')
        elif self.driver_name == 'posix' and not files:
            self._override(option, default_repository(), '--repository')
        if args.compression:
            self._override('backup_compression_algorithm', args.compression,
                           '--compression')
        self.password_keys = password.password_keys(
            getattr(args, 'password_file', None))

    def _override(self, name, value, flag):
        try:
            CONF.set_override(name, value)
        except (ValueError, cfg.Error) as e:
            raise exit_status.UsageError('%s %s: %s'
                                         % (flag, value, progress.one_line(e)))

    def use_workdir(self, workdir):
        """Repository (posix) and catalog in ``workdir``, unless given."""
        if not self.args.repository and self.driver_name == 'posix':
            self.repository_override = os.path.join(workdir, 'repository')
        if not self.args.catalog:
            self.catalog_override = os.path.join(workdir, CATALOG_NAME)

    def repository_name(self):
        """The directory, share, bucket or container of the run."""
        return getattr(CONF, REPOSITORY_OPTION[self.driver_name], None)

    def repository_text(self):
        return '%s %s' % (self.driver_name, self.repository_name())

    def _endpoint(self):
        values = []
        for name in ENDPOINT_OPTIONS.get(self.driver_name, ()):
            try:
                values.append(str(getattr(CONF, name) or ''))
            except cfg.NoSuchOptError:
                values.append('')
        return '\n'.join(values)

    def catalog_path(self):
        if self.catalog_override:
            return self.catalog_override
        given = self.args.catalog or os.environ.get(CATALOG_ENV)
        if given:
            return os.path.abspath(os.path.expanduser(given))
        if self.driver_name == 'posix':
            return os.path.join(CONF.backup_posix_path, CATALOG_NAME)
        path = default_catalog(self.driver_name, self.repository_name(),
                               self._endpoint())
        self._warn_shared_catalog(path)
        return path

    def _warn_shared_catalog(self, path):
        """Point at the catalog earlier versions shared between buckets."""
        shared = os.path.join(user_data_dir(), CATALOG_NAME)
        if self._warned or os.path.exists(path) or \
                not os.path.exists(shared):
            return
        self._warned = True
        LOG.warning('The catalog of the %s repository is now %s; %s, the '
                    'catalog earlier versions shared between every bucket, '
                    'container and share, is not read: pass --catalog %s '
                    'to use it.', self.repository_text(), path, shared,
                    shared)

    def catalog(self, create=False):
        from cinder_chunked_ext.tool import catalog
        if self._catalog is None or (create and not self._catalog.exists):
            self._catalog = catalog.Catalog(self.catalog_path(),
                                            create=create)
        return self._catalog

    def environment(self, create=False):
        from cinder_chunked_ext.tool import catalog
        return catalog.CatalogEnvironment(self.catalog(create=create))

    def driver(self, environment):
        from cinder_chunked_ext.tool import catalog
        return self.driver_class(catalog.Context(
            environment, password_keys=self.password_keys))

    def check_record_driver(self, record):
        recorded = getattr(record, 'driver', None)
        if recorded and recorded != self.driver_name:
            raise exit_status.UsageError(
                'backup %s was made with driver %s; run with --driver %s'
                % (record.id, recorded, recorded))

    def resolve(self, backup_id):
        """The catalog's record of ``backup_id`` (or a unique prefix)."""
        from cinder_chunked_ext import exception
        from cinder_chunked_ext.tool import catalog
        try:
            return self.catalog().resolve(backup_id)
        except exception.BackupNotFound:
            raise exit_status.NotFoundError(
                'no backup %s in catalog %s%s' % (
                    backup_id, self.catalog_path(),
                    '' if len(backup_id) >= catalog.MIN_PREFIX else
                    ' (an ID prefix needs at least %d characters)'
                    % catalog.MIN_PREFIX))
        except catalog.AmbiguousBackupId as e:
            raise exit_status.UsageError(str(e))

    def repository_driver(self):
        """``(environment, driver)`` reading records from the repository."""
        from cinder_chunked_ext.tool import catalog
        from cinder_chunked_ext.tool import recovery
        env = recovery.RepositoryEnvironment()
        driver = self.driver_class(catalog.Context(
            env, password_keys=self.password_keys))
        env.attach(driver)
        return env, driver

    def repository_backup(self, container, prefix=None):
        """``(driver, record)`` of a backup found in the repository.

        ``container`` and ``prefix`` as ``repository scan`` prints them,
        or, alone, a backup ID or a unique prefix of one (4 or more
        characters).
        """
        from cinder_chunked_ext.tool import recovery
        env, driver = self.repository_driver()
        if prefix is None:
            return driver, self._repository_backup_by_id(env, container)
        try:
            record = env.load(container, prefix)
        except recovery.NotInRepository:
            raise exit_status.NotFoundError(
                'no backup with prefix %s in container %s of the %s '
                'repository' % (prefix, container, self.repository_text()))
        return driver, record

    def _repository_backup_by_id(self, env, backup_id):
        from cinder_chunked_ext.tool import catalog
        if len(backup_id) < catalog.MIN_PREFIX:
            raise exit_status.UsageError(
                'backup ID prefix %s is too short: it needs at least %d '
                'characters' % (backup_id, catalog.MIN_PREFIX))
        matches = [e for e in env.scan()
                   if e.record is not None and
                   e.record.id.startswith(backup_id)]
        exact = [e for e in matches if e.record.id == backup_id]
        matches = exact or matches
        if not matches:
            raise exit_status.NotFoundError(
                'no backup %s in the %s repository (repository scan lists '
                'the backups it holds)' % (backup_id,
                                           self.repository_text()))
        if len({e.record.id for e in matches}) > 1:
            raise exit_status.UsageError(
                'backup ID prefix %s is ambiguous in the repository: %s'
                % (backup_id, ', '.join(sorted({e.record.id
                                                for e in matches}))))
        if len(matches) > 1:
            raise exit_status.UsageError(
                'backup %s is in the repository more than once (%s): give '
                'CONTAINER PREFIX' % (matches[0].record.id, '; '.join(
                    '%s %s' % (e.container, e.prefix) for e in matches)))
        return matches[0].record
