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

"""Backups on an NFS share: the POSIX driver on a share it mounts itself.

``cinder.conf``::

    [DEFAULT]
    backup_driver = cinder_chunked_ext.drivers.nfs.NFSBackupDriver
    backup_share = nfs.example.org:/srv/cinder-backup
    # backup_mount_options = vers=4.2

The share is mounted at ``<backup_mount_point_base>/<md5 hex of the share
string>``, the path upstream's driver (and os-brick) use, so a share that
upstream's driver mounted is found and reused.  Mounting goes through
os-brick's ``RemoteFsClient`` when os-brick is installed (it is wherever
Cinder is), otherwise through ``mount -t nfs`` run with the root helper.
Once mounted, the mount point is made writable for the service's group
(``chgrp -R`` / ``chmod -R g+w`` through the root helper, only when needed).

Unlike upstream:

* nothing is mounted when the driver is constructed (or imported): the
  share is mounted by ``check_for_setup_error`` and at the start of each
  backup, restore or delete when it is not mounted (so a share that went
  away is mounted again instead of the local directory being used);
* an unset or malformed ``backup_share`` is reported as a configuration
  error that says what is expected;
* mount errors name the share and the mount point, never the mount
  options (which may carry credentials).
"""

import hashlib
import ipaddress
import os
import re
import stat
import time

from oslo_concurrency import lockutils
from oslo_concurrency import processutils as putils
from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import strutils

try:  # os-brick comes with Cinder; the standalone tool may lack it.
    from os_brick import exception as brick_exception
    from os_brick.remotefs import remotefs as remotefs_brick
except ImportError:  # pragma: no cover - depends on the environment
    brick_exception = None
    remotefs_brick = None

from cinder_chunked_ext import cinder_compat
from cinder_chunked_ext.drivers import posix as posix_driver
from cinder_chunked_ext import exception
from cinder_chunked_ext.store import posix as posix_store

LOG = logging.getLogger(__name__)

PROC_MOUNTS = '/proc/mounts'
LOCK_PREFIX = 'cinder_chunked_ext-nfs-mount-'
#: Seconds before the second mount attempt; doubled for each next one.
FIRST_RETRY_DELAY = 1.0
MAX_RETRY_DELAY = 30.0
#: The longest command error output quoted in an error message.
MAX_REASON_CHARS = 500

nfsbackup_service_opts = [
    cfg.StrOpt('backup_mount_point_base',
               default='$state_path/backup_mount',
               help='Directory under which the NFS share is mounted, at '
                    'a path named after the MD5 hash of backup_share.'),
    cfg.StrOpt('backup_share',
               help='The NFS share that holds the backups, as '
                    'hostname:/path, ipv4addr:/path or "[ipv6addr]:/path".'),
    cfg.StrOpt('backup_mount_options',
               help='Mount options passed to the NFS client, as with '
                    '"mount -o". See the nfs(5) manual page.'),
    cfg.IntOpt('backup_mount_attempts',
               min=1,
               default=3,
               help='How many times mounting the NFS share is tried '
                    'before an error is raised.'),
]

CONF = cfg.CONF
CONF.register_opts(cinder_compat.same_as_upstream(
    nfsbackup_service_opts, 'cinder.backup.drivers.nfs',
    'nfsbackup_service_opts'))


class NfsMountError(exception.StoreError):
    """The NFS share could not be mounted."""

    message = ('Could not mount NFS share %(share)s at %(mount_point)s '
               'after %(attempts)d attempt(s): %(reason)s')


# -- the share string ------------------------------------------------------

# Underscores are not in RFC 1123 but occur in internal DNS names and are
# accepted by mount.nfs; a leading "-" never is (it would read as an option).
_HOST_LABEL = r'[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?'
_HOSTNAME_RE = re.compile(
    r'^(?=.{1,253}\.?$)%s(?:\.%s)*\.?$' % (_HOST_LABEL, _HOST_LABEL))
_DOTTED_NUMBERS_RE = re.compile(r'^[0-9.]+$')
_SHARE_FORMS = 'hostname:/path, ipv4addr:/path or [ipv6addr]:/path'


def _bad_share(share, why):
    return exception.StoreConfigurationError(
        reason='backup_share %r is not a valid NFS share (%s); expected %s'
               % (share, why, _SHARE_FORMS))


def parse_share(share):
    """Split an NFS share string into ``(host, path)``.

    Accepts ``hostname:/path``, ``ipv4addr:/path`` and
    ``[ipv6addr]:/path``; raises :class:`StoreConfigurationError` with the
    reason otherwise.
    """
    if not share:
        raise exception.StoreConfigurationError(
            reason='backup_share is not set; set it to the NFS export '
                   'that holds the backups, as %s' % _SHARE_FORMS)
    if any(c.isspace() or not c.isprintable() for c in share):
        raise _bad_share(share, 'it contains white space or control '
                                'characters')
    if share.startswith('['):
        end = share.find(']')
        if end < 0 or share[end + 1:end + 2] != ':':
            raise _bad_share(share, 'an IPv6 address must be followed by '
                                    '"]:"')
        host, path = share[1:end], share[end + 2:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _bad_share(share, '%r is not an IPv6 address' % host)
    else:
        host, sep, path = share.partition(':')
        if not sep:
            raise _bad_share(share, 'there is no ":" between host and path')
        if ':' in path and not path.startswith('/'):
            raise _bad_share(share, 'an IPv6 address must be written in '
                                    'brackets')
        if _DOTTED_NUMBERS_RE.match(host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise _bad_share(share, '%r is not an IPv4 address' % host)
        elif not _HOSTNAME_RE.match(host):
            raise _bad_share(share, '%r is not a valid host name' % host)
    if not path.startswith('/'):
        raise _bad_share(share, 'the exported path must be absolute')
    return host, path


def mount_point_for(base, share):
    """``<base>/<md5 hex of share>``, as upstream and os-brick name it."""
    digest = hashlib.md5(share.encode('utf-8'),
                         usedforsecurity=False).hexdigest()
    return os.path.join(base, digest)


# -- the mount table -------------------------------------------------------

_OCTAL_ESCAPE_RE = re.compile(r'\\([0-7]{3})')


def _unescape_mount_field(field):
    # The kernel writes space, tab, newline and backslash as \ooo.
    return _OCTAL_ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 8)), field)


def read_mount_points(mounts_file=PROC_MOUNTS):
    """The set of mount points listed in ``mounts_file``."""
    points = set()
    with open(mounts_file, 'r', errors='replace') as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) >= 2 and not fields[0].startswith('#'):
                points.add(_unescape_mount_field(fields[1]))
    return points


def is_mounted(path, mounts_file=PROC_MOUNTS):
    """True when something is mounted at ``path``.

    The kernel's mount table is authoritative; ``os.path.ismount`` is the
    fallback where it cannot be read (it sees NFS mounts, though not bind
    mounts within one file system).
    """
    real = os.path.realpath(path)
    try:
        return real in read_mount_points(mounts_file)
    except OSError:
        return os.path.ismount(real)


# -- mounting --------------------------------------------------------------

def _retryable_errors():
    errors = (putils.ProcessExecutionError, OSError)
    if brick_exception is not None:
        errors += (brick_exception.BrickException,)
    return errors


class ShareMounter(object):
    """Mounts one NFS share at its mount point unless it is mounted.

    Mounters of one share in one process take the same lock, so
    concurrent drivers mount it once.

    :param execute: runs a command, with processutils.execute's signature.
    :param sleep: waits between mount attempts (``time.sleep`` if None).
    """

    def __init__(self, share, mount_point_base, mount_options, attempts,
                 execute, root_helper, sleep=None):
        self.share = share
        self.mount_point_base = mount_point_base
        self.mount_options = mount_options
        self.attempts = max(1, attempts)
        self._execute = execute
        self._root_helper = root_helper
        self.sleep = sleep or time.sleep
        self._mounted = False
        self._brick_client = None

    @property
    def mount_point(self):
        """Where the share is (or will be) mounted; no I/O."""
        return mount_point_for(self.mount_point_base or '', self.share or '')

    def _check_configuration(self):
        parse_share(self.share)
        if (not self.mount_point_base
                or not os.path.isabs(self.mount_point_base)):
            raise exception.StoreConfigurationError(
                reason='backup_mount_point_base %r must be an absolute '
                       'path' % self.mount_point_base)

    def ensure_mounted(self, recheck=False):
        """Mount the share unless it is; return the mount point.

        After the first success this returns at once, without I/O or
        logging (it may then run on a native thread under eventlet);
        ``recheck`` looks at the mount table and permissions again.
        """
        if self._mounted and not recheck:
            return self.mount_point
        self._check_configuration()
        path = self.mount_point
        with lockutils.lock(LOCK_PREFIX + path):
            if is_mounted(path):
                LOG.debug('NFS share %(share)s is already mounted at '
                          '%(path)s.', {'share': self.share, 'path': path})
            else:
                self._mount_with_retries(path)
            self._make_group_writable(path)
            self._mounted = True
        return path

    def _mount_with_retries(self, path):
        delay = FIRST_RETRY_DELAY
        for attempt in range(1, self.attempts + 1):
            try:
                self._mount_once(path)
            except _retryable_errors() as e:
                reason = self._describe_failure(e)
            else:
                LOG.info('Mounted NFS share %(share)s at %(path)s.',
                         {'share': self.share, 'path': path})
                return
            if attempt == self.attempts:
                break
            LOG.warning('Mount attempt %(n)d of %(total)d of NFS share '
                        '%(share)s at %(path)s failed, retrying in '
                        '%(delay)g s: %(reason)s',
                        {'n': attempt, 'total': self.attempts,
                         'share': self.share, 'path': path, 'delay': delay,
                         'reason': reason})
            self.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)
            if is_mounted(path):
                # Another process mounted it meanwhile.
                return
        LOG.error('Giving up mounting NFS share %(share)s at %(path)s '
                  'after %(total)d attempt(s): %(reason)s',
                  {'share': self.share, 'path': path,
                   'total': self.attempts, 'reason': reason})
        raise NfsMountError(share=self.share, mount_point=path,
                            attempts=self.attempts, reason=reason)

    def _mount_once(self, path):
        if remotefs_brick is not None:
            self._brick().mount(self.share)
            return
        self._make_mount_point(path)
        cmd = ['mount', '-t', 'nfs']
        if self.mount_options:
            cmd += ['-o', self.mount_options]
        cmd += [self.share, path]
        try:
            self._execute(*cmd, root_helper=self._root_helper,
                          run_as_root=True, check_exit_code=0)
        except putils.ProcessExecutionError as e:
            # "busy or already mounted" is also said of failed mounts.
            if 'already mounted' in (e.stderr or '') and is_mounted(path):
                return
            raise

    def _brick(self):
        # The client runs its commands through our execute, so the root
        # helper and the command runner are the same on both paths.
        if self._brick_client is None:
            self._brick_client = remotefs_brick.RemoteFsClient(
                'nfs', self._root_helper, execute=self._execute,
                nfs_mount_point_base=self.mount_point_base,
                nfs_mount_options=self.mount_options)
        return self._brick_client

    def _make_mount_point(self, path):
        try:
            os.makedirs(path, exist_ok=True)
        except PermissionError:
            self._execute('mkdir', '-p', path, root_helper=self._root_helper,
                          run_as_root=True, check_exit_code=0)

    def _make_group_writable(self, path):
        """Let the service's group write the share, as upstream does."""
        try:
            st = os.stat(path)
        except OSError as e:
            raise posix_store.classify_os_error(e, 'cannot stat %s' % path)
        commands = []
        group = os.getegid()
        if st.st_gid != group:
            commands.append(['chgrp', '-R', str(group), path])
        if not st.st_mode & stat.S_IWGRP:
            commands.append(['chmod', '-R', 'g+w', path])
        for cmd in commands:
            LOG.info('Running %s so the service can write to NFS share '
                     '%s.', ' '.join(cmd), self.share)
            try:
                self._execute(*cmd, root_helper=self._root_helper,
                              run_as_root=True, check_exit_code=0)
            except (putils.ProcessExecutionError, OSError) as e:
                raise exception.PermanentStoreError(
                    reason='cannot make NFS share %s at %s writable for '
                           'group %d: %s' % (self.share, path, group,
                                             self._describe_failure(e)))

    def _describe_failure(self, error):
        """A reason for logs and errors, with mount options masked."""
        if isinstance(error, putils.ProcessExecutionError):
            output = (error.stderr or '').strip() or 'no error output'
            text = 'exit code %s: %s' % (error.exit_code, output)
        else:
            text = str(error) or type(error).__name__
        if self.mount_options:
            text = text.replace(self.mount_options, '***')
        text = re.sub(r'(-o\s+)[^\s\'"\\]+', r'\1***', text)
        text = strutils.mask_password(text)
        if len(text) > MAX_REASON_CHARS:
            text = text[:MAX_REASON_CHARS] + '...'
        return text


class MountedShareStore(posix_store.PosixStore):
    """A POSIX store whose root is the share, mounted on first use."""

    # On a share every commit waits for the server (the fsync, the rename
    # and the directory's fsync are round trips), and a thread waiting on
    # the network does not hold the GIL: small objects commit as many at
    # once as any others.
    max_concurrent_small_writes = None

    def __init__(self, mounter):
        self.mounter = mounter
        super().__init__(mounter.mount_point)

    @property
    def root(self):
        return self.mounter.ensure_mounted()

    @root.setter
    def root(self, value):
        # PosixStore's constructor records a fixed root; ours is resolved
        # by mounting, so only the planned path is kept, for messages.
        self._planned_root = value

    def describe(self):
        return 'NFS share %s at %s' % (self.mounter.share,
                                       self._planned_root)

    def check(self):
        self.mounter.ensure_mounted(recheck=True)
        super().check()


class NFSBackupDriver(posix_driver.PosixBackupDriver):
    """Backup, restore and delete on an NFS share this driver mounts.

    The constructor runs no command: the share is mounted by
    :meth:`check_for_setup_error`, at the start of each backup, restore
    or delete when it is not mounted, and otherwise when the repository
    is first used.
    """

    def __init__(self, context):
        self.backup_mount_point_base = CONF.backup_mount_point_base
        self.backup_share = CONF.backup_share
        self.mount_options = CONF.backup_mount_options
        self._execute = putils.execute
        self._root_helper = cinder_compat.root_helper()
        self.mounter = ShareMounter(
            self.backup_share, self.backup_mount_point_base,
            self.mount_options, CONF.backup_mount_attempts,
            self._run_command, self._root_helper)
        super().__init__(context, backup_path=self.mounter.mount_point)
        self.store = MountedShareStore(self.mounter)

    @staticmethod
    def get_driver_options():
        return (list(posix_driver.posixbackup_service_opts)
                + list(nfsbackup_service_opts))

    @staticmethod
    def get_extra_options():
        # None: on a share each object file is fsynced (posix_sync is
        # the POSIX driver's).
        return []

    @staticmethod
    def _store_sync():
        return posix_store.SYNC_EACH_FILE

    def _run_command(self, *cmd, **kwargs):
        # Looked up on each call, so ``_execute`` can be replaced (tests,
        # wrappers) after construction, as with upstream's driver.
        return self._execute(*cmd, **kwargs)

    @property
    def mount_point(self):
        return self.mounter.mount_point

    def check_for_setup_error(self):
        """Check the share setting, mount it and check it is writable."""
        parse_share(self.backup_share)
        super().check_for_setup_error()

    # Each operation checks the mount on the calling thread before the
    # engine hands repository work to worker threads, so a share that
    # went away is mounted again rather than the empty mount point
    # directory on the local disk being written to.

    def backup(self, *args, **kwargs):
        self.mounter.ensure_mounted(recheck=True)
        return super().backup(*args, **kwargs)

    def restore(self, *args, **kwargs):
        self.mounter.ensure_mounted(recheck=True)
        return super().restore(*args, **kwargs)

    def delete_backup(self, *args, **kwargs):
        self.mounter.ensure_mounted(recheck=True)
        return super().delete_backup(*args, **kwargs)
